"""Run-config group "int8.": also export the int8 LiteRT file."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "int8"


@dataclass(frozen=True)
class Settings:
    enabled: bool = False  # pyproject.toml turns it on: the file a phone keyboard ships
