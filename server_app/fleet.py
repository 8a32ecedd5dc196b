"""Simulation or real devices, and the refusal of a run without DP on real devices.

Simulation or real devices. Flower 1.42 hands the ServerApp one of two grids, and which one is the
only thing that tells the engines apart from inside the app: the simulation engine (`flwr run` on a
`--simulation` SuperLink, which runs the `flwr-simulation` process, and the deprecated
`run_simulation()`) builds an `InMemoryGrid` over its in-process link state
(flwr/simulation/run_simulation.py, the only place that constructs one), while a deployment
SuperLink starts a `flwr-serverapp` process that talks to it over the Runtime API through an
`HttpGrid` (flwr/superlink/runtime/run_serverapp.py). Neither the run config nor the Context says
it, and the run's federation does not either: both engines run under Flower's no-op federation
manager, "@none/default". So: an `InMemoryGrid` is a simulation; every other grid of Flower's
(`HttpGrid`, or one a later Flower adds) is real devices - fail closed; a grid that is not
Flower's was built by whoever called `main` (tests/inprocess.py plays simulated partitions), and
says so with a `real_devices` attribute; without one it counts as real devices (fail closed).
"""

from __future__ import annotations

import logging

from task.config import Config, ConfigError

log = logging.getLogger("flwr")

NO_DP_ON_DEVICES = (
    'dp.mode = "none" (and no dp.sgd) on real devices: every update would leave the fleet\'s text with no differential '
    "privacy, so a model trained on it (and anyone who sees it) could reveal what people typed. Set a dp.mode, e.g. "
    'dp.mode="central-client-clip" with dp.target-epsilon, dp.max-epsilon and dp.delta below 1/population '
    "(docs/privacy.md opens with the recipe), or, for a test fleet whose text may go unprotected, "
    "dp.allow-no-dp-on-devices=true")


def on_real_devices(grid) -> bool:
    """Is the ServerApp talking to real SuperNodes (module doc)?"""
    from flwr.serverapp import Grid
    from flwr.superlink.grid import InMemoryGrid

    if isinstance(grid, InMemoryGrid):
        return False  # Flower's simulation engine
    if isinstance(grid, Grid) and type(grid).__module__.split(".")[0] == "flwr":
        return True  # HttpGrid (a deployment's flwr-serverapp), or any grid of Flower's that is not the simulation's
    # a grid the caller built: it says (tests/inprocess.py plays simulated partitions); one that does
    # not say counts as real devices: fail closed (outside review F3)
    return bool(getattr(grid, "real_devices", True))


def require_dp_on_devices(cfg: Config, real_devices: bool) -> None:
    """Refuse a run without DP on real devices unless dp.allow-no-dp-on-devices says so."""
    if real_devices and not cfg.dp.enabled and not cfg.dp.allow_no_dp_on_devices:
        log.error("Run refused: %s", NO_DP_ON_DEVICES)  # in the run's log (flwr log), whatever shows the exception
        raise ConfigError(f"refused: {NO_DP_ON_DEVICES}")
