"""What a run keeps on disk: checkpoints (with the state to resume), plots, atomic file writes."""
