"""Transfer compression: float16 / int8 model and update encoding on the wire.
Run config `transfer.dtype`; doc docs/performance.md; tests tests/features/transfer/."""
