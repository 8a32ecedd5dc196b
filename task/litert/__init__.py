"""The model on the device, offline: LiteRT export (float32/float16/int8), per-word quantisation
and the suggestion engine that runs the exported file."""
