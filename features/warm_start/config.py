"""Run-config group "warm-start.": the first model's weights from elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, check

GROUP = "warm-start"


@dataclass(frozen=True)
class Settings:
    init_from: str = ""  # a checkpoint (scripts/tools/pretrain.py or another run); "" = a new model


def validate(cfg: Config) -> None:
    init_from = cfg.feature(GROUP).init_from
    check("warm-start.init-from", init_from, not (init_from and cfg.resume_from),
          '"" when resume-from is set (a resume continues its own model)')
