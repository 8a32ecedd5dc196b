"""The run-config checks of secure aggregation, with the refusals it needs of other features."""

from __future__ import annotations

from task.config import SECAGG_REFUSED_MODES, Config, check, secagg_max_cohort


def validate(cfg: Config) -> None:
    """secagg.* and what SecAgg+ refuses of the other features (called when a secagg.* key is set)."""
    sa, dp = cfg.secagg, cfg.dp
    if not cfg.secure_aggregation:
        return
    check("secagg.enabled", dp.mode, dp.mode not in SECAGG_REFUSED_MODES,
           f"a dp.mode other than {list(SECAGG_REFUSED_MODES)} with secagg.enabled = true (got dp.mode="
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
    if dp.mode in ("central-client-clip", "central-ftrl", "local"):
        # A clipped update's largest value is at most its norm: then SecAgg+'s own clip loses nothing.
        check("secagg.clipping-range", sa.clipping_range, sa.clipping_range >= dp.clipping_norm,
               f">= dp.clipping-norm = {dp.clipping_norm:g} (else SecAgg+ clips update values the DP "
               "clipping already bounded, and the sum is no longer the clipped sum)")
    check("secagg.quantization-range", sa.quantization_range, 2 <= sa.quantization_range <= 2**22,
           "an integer in [2, 4194304] (the masks live modulo 2**32; 2**22 levels leave room for "
           "1023 devices' sum)")
    check("min-train-nodes", cfg.min_train_nodes,
           cfg.min_train_nodes <= secagg_max_cohort(sa.quantization_range),
           f"at most {secagg_max_cohort(sa.quantization_range)} with secagg.enabled = true and "
           f"secagg.quantization-range = {sa.quantization_range} (devices x range must stay below 2**32)")
