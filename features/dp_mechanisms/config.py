"""The run-config checks of the DP mechanisms beyond fixed clipping (adaptive clipping, DP-FTRL,
local DP, DP-SGD): task/config.py runs them when one of these is asked for."""

from __future__ import annotations

from task.config import Config, check


def validate(cfg: Config) -> None:
    dp = cfg.dp
    if dp.mode == "central-adaptive-clip":
        check("dp.target-quantile", dp.target_quantile, 0 < dp.target_quantile < 1, "a number in (0, 1)")
        check("dp.clip-lr", dp.clip_lr, dp.clip_lr > 0, "a number > 0")
        check("dp.clipped-count-stddev", dp.clipped_count_stddev, dp.clipped_count_stddev >= 0,
              "a number >= 0 (0 = sampled devices / 20)")
        if dp.clipped_count_stddev > 0:
            check("dp.noise-multiplier", dp.noise_multiplier, dp.noise_multiplier < 2 * dp.clipped_count_stddev,
                  f"below 2 x dp.clipped-count-stddev = {2 * dp.clipped_count_stddev:g} with adaptive clipping "
                  "(the clipped-count noise spends part of the budget; Andrew et al. 2021)")
    if dp.mode == "local":
        check("dp.local-epsilon", dp.local_epsilon, dp.local_epsilon > 0, "a number > 0")
    if dp.sgd:
        check("dp.sgd-noise-multiplier", dp.sgd_noise_multiplier, dp.sgd_noise_multiplier > 0,
              "a number > 0 (with no noise, clipping alone gives no privacy)")
        check("dp.sgd-clipping-norm", dp.sgd_clipping_norm, dp.sgd_clipping_norm > 0, "a number > 0")
        check("dp.sgd-sampling-rate", dp.sgd_sampling_rate, 0 < dp.sgd_sampling_rate <= 1, "a number in (0, 1]")


def validate_population(cfg: Config, population: int, sampled: int) -> None:
    """Checks that need the number of devices sampled per round, known once they connect."""
    dp = cfg.dp
    if dp.mode == "central-adaptive-clip" and dp.clipped_count_stddev == 0:
        check("dp.noise-multiplier", dp.noise_multiplier, dp.noise_multiplier < sampled / 10,
              f"below 2 x dp.clipped-count-stddev = 2 x {sampled}/20 with adaptive clipping (the clipped-count "
              "noise spends part of the budget); raise dp.clipped-count-stddev")
