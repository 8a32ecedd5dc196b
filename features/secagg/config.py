"""Run-config group "secagg.": SecAgg+ (Bell et al. 2020) through Flower's SecAggPlusWorkflow
(docs/secure-aggregation.md), its checks, and the refusals it needs of other features."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, ConfigError, check

GROUP = "secagg"
# dp-modes secure aggregation refuses: the server clips each update, or reads each norm bit.
REFUSED_MODES = ("central-server-clip", "central-adaptive-clip")
MODULUS = 2**32  # Flower's SecAgg+ ring (its default and maximum)


def max_cohort(quantization_range: int) -> int:
    """The most devices one SecAgg+ round may sum: k devices x the range must stay below 2**32.
    Flower 1.42 does not check, and past it returns the sum as the "mean" (tests/features/secagg/)."""
    return (MODULUS - 1) // quantization_range


@dataclass(frozen=True)
class Settings:
    enabled: bool = False  # the server receives only the sum of the updates
    num_shares: int = 3  # Flower's SecAgg+ example; an int > 2 (the library's rule)
    reconstruction_threshold: int = 2  # in [2, num_shares)
    clipping_range: float = 8.0  # the library's default: each update value is clipped to +-this
    quantization_range: int = 4194304  # the library's default (2**22 levels over the range)

    @property
    def max_cohort(self) -> int | None:
        """The most devices a round may ask (None: no limit, SecAgg+ off)."""
        return max_cohort(self.quantization_range) if self.enabled else None


def validate(cfg: Config) -> None:
    """secagg.* and what SecAgg+ refuses of the other features."""
    sa, dp = cfg.feature(GROUP), cfg.dp
    if not sa.enabled:
        return
    check("secagg.enabled", dp.mode, dp.mode not in REFUSED_MODES,
           f"a dp.mode other than {list(REFUSED_MODES)} with secagg.enabled = true (got dp.mode="
           f'"{dp.mode}": the server would need each device\'s update, or its norm bit, in the clear; use '
           '"central-client-clip")')
    check("secagg.enabled", cfg.transfer_dtype, cfg.transfer_dtype == "float32",
           'transfer.dtype = "float32" with secagg.enabled = true (SecAgg+ sends its own masked '
           "integers; float16/int8 encodings do not compose with the masks)")
    check("secagg.enabled", cfg.selection_factor, cfg.selection_factor == 1,
           "participation.selection-factor = 1 with secagg.enabled = true (SecAgg+ sums every device that finishes; it "
           "cannot keep only the first round-goal updates)")
    check("secagg.num-shares", sa.num_shares, sa.num_shares > 2, "an integer > 2")
    check("secagg.reconstruction-threshold", sa.reconstruction_threshold,
           2 <= sa.reconstruction_threshold < sa.num_shares,
           f"an integer in [2, secagg.num-shares = {sa.num_shares})")
    check("secagg.clipping-range", sa.clipping_range, sa.clipping_range > 0, "a number > 0")
    if dp.mode in ("central-client-clip", "central-ftrl", "central-blt", "local"):
        # A clipped update's largest value is at most its norm: then SecAgg+'s own clip loses nothing.
        check("secagg.clipping-range", sa.clipping_range, sa.clipping_range >= dp.clipping_norm,
               f">= dp.clipping-norm = {dp.clipping_norm:g} (else SecAgg+ clips update values the DP "
               "clipping already bounded, and the sum is no longer the clipped sum)")
    check("secagg.quantization-range", sa.quantization_range, 2 <= sa.quantization_range <= 2**22,
           "an integer in [2, 4194304] (the masks live modulo 2**32; 2**22 levels leave room for "
           "1023 devices' sum)")
    check("min-train-nodes", cfg.min_train_nodes,
           cfg.min_train_nodes <= max_cohort(sa.quantization_range),
           f"at most {max_cohort(sa.quantization_range)} with secagg.enabled = true and "
           f"secagg.quantization-range = {sa.quantization_range} (devices x range must stay below 2**32)")


def validate_population(cfg: Config, population: int, sampled: int) -> None:
    most = cfg.feature(GROUP).max_cohort
    if most is not None and sampled > most:
        raise ConfigError(
            f"run-config keys 'fraction-train' = {cfg.fraction_train:g} and 'min-train-nodes' = "
            f"{cfg.min_train_nodes} select {sampled} of the {population} connected devices per round, but with "
            f"secagg.enabled = true and 'secagg.quantization-range' = {cfg.feature(GROUP).quantization_range} "
            f"at most {most} devices fit in one round (devices x range must stay below 2**32, the ring "
            f"SecAgg+ sums in); lower fraction-train or secagg.quantization-range")
