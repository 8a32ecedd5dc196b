"""int8 on the device: the LiteRT file a phone keyboard ships (1.50 MB for the default model),
its two vocabulary-sized matrices stored per word in 8 bits (16 for the most frequent words).
Exported beside the core's float32 and float16 files when int8.enabled (pyproject.toml ships it
on); the suggestion CLI (task/litert/suggest.py) runs any of them. Doc docs/on-device.md; tests
tests/features/int8/."""
