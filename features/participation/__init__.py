"""Who takes part: device rules (charging, battery, metered network), what a message cost the
device, over-selection with a round goal, simulated availability and stragglers. Run config
`participation.*` (the group present turns it on); doc docs/participation.md;
tests tests/features/participation/."""
