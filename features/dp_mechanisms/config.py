"""The run-config checks of the DP mechanisms beyond fixed clipping (adaptive clipping, DP-FTRL,
BLT-DP-FTRL, local DP, DP-SGD): task/config.py runs them when one of these is asked for."""

from __future__ import annotations

from task.config import Config, check

BLT_MAX_ROUNDS = 20_000  # central-blt: the optimisation of its parameters takes a few seconds at this length


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
    if dp.mode == "central-blt":
        check("num-server-rounds", cfg.num_server_rounds, cfg.num_server_rounds <= BLT_MAX_ROUNDS,
              f"at most {BLT_MAX_ROUNDS} with dp.mode = \"central-blt\" (the server optimises the BLT's parameters "
              "for the run's rounds before the first one: longer runs take too long to plan)")
        check("discovery.enabled", cfg.vocab_discovery, not cfg.vocab_discovery,
              'false with dp.mode = "central-blt" (the noise buffers have no rows for new words)')
        if cfg.secure_aggregation:  # a clipped update's largest value is at most its norm: SecAgg+'s clip loses nothing
            check("secagg.clipping-range", cfg.feature("secagg").clipping_range, cfg.feature("secagg").clipping_range >= dp.clipping_norm,
                  f">= dp.clipping-norm = {dp.clipping_norm:g} (else SecAgg+ clips update values the DP clipping "
                  "already bounded, and the sum is no longer the clipped sum)")
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
    if dp.mode == "central-blt":
        # BLT-DP-FTRL's minimum separation b is derived, not a key: b = floor(population / selected)
        # (task/privacy/mechanisms.py min_separation), the largest the server can always keep while the
        # population is connected: the last b - 1 rounds exclude at most (b - 1) x selected devices, leaving
        # `selected` eligible. A larger b would leave rounds without enough eligible devices (each such round
        # restarts the noise, composed: costly); a smaller one only adds sensitivity. Checked here so that a
        # change of the rule cannot make the server's sampler come up short.
        from task.privacy.ledger import selected_per_round
        from task.privacy.mechanisms import min_separation

        selected = selected_per_round(population, sampled, cfg.selection_factor)
        b = min_separation(population, selected)
        check("min-train-nodes", sampled, b >= 1 and b * selected <= population,
              f"a cohort the population can rotate through with dp.mode = \"central-blt\": minimum separation "
              f"b = {b} rounds x {selected} devices asked per round must not exceed the {population} connected")
