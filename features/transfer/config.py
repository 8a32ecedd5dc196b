"""Run-config group "transfer.": how models and updates are encoded on the network."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, check

GROUP = "transfer"
DTYPES = ("float32", "float16", "int8")  # features/transfer/codec.py


@dataclass(frozen=True)
class Settings:
    dtype: str = "float32"  # "float16": half the bytes each way; "int8": updates in 8 bits (codec.py)


def validate(cfg: Config) -> None:
    dtype = cfg.feature(GROUP).dtype
    check("transfer.dtype", dtype, dtype in DTYPES, f"one of {list(DTYPES)}")
