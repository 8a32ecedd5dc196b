"""Run-config group "audit.": the canaries the privacy audit plants in simulated text."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, ConfigError

GROUP = "audit"


@dataclass(frozen=True)
class Settings:
    canaries: str = ""  # "k:r,...": canary sentences planted in k devices' text r times (canary.py); "" = off


def validate(cfg: Config) -> None:
    canaries = cfg.feature(GROUP).canaries
    if canaries:
        from features.audit.canary import parse

        try:
            parse(canaries)
        except ValueError as e:
            raise ConfigError(f"run-config key 'audit.canaries' = {canaries!r}: {e}") from None
