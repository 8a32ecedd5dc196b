"""Before the first round (server_app/privacy_plan.py): the planned epsilon of every DP run, in
words; the warning without a budget; dp.target-epsilon refused where there is no noise multiplier
to plan; and a run without DP refused on real devices unless the run config opts out.

Simulation or real devices is told by the grid Flower hands the ServerApp: its simulation engine's
InMemoryGrid, or a deployment's HttpGrid (both built here as Flower builds them, without a
SuperLink)."""

from __future__ import annotations

import logging
import re
import sys
from types import SimpleNamespace

import pytest
from flwr.serverapp import Grid
from flwr.superlink.grid import HttpGrid, InMemoryGrid

from server_app.fleet import on_real_devices, require_dp_on_devices
from server_app.privacy_plan import no_budget_warning, plan, plan_privacy
from task.config import DP_MODES, Config, ConfigError, DPConfig

CENTRAL = [m for m in DP_MODES if m.startswith("central")]


def config(**dp) -> Config:
    """Built directly: each mode's own checks are not what this tests (and live in features/)."""
    return Config(num_server_rounds=5, dp=DPConfig(**{"delta": 1e-4, **dp}))


@pytest.mark.parametrize("mode", CENTRAL)
def test_the_planned_epsilon_line_names_relation_delta_rounds_and_sampling(mode):
    dp = {"mode": mode, "noise_multiplier": 1.5}
    if mode == "central-adaptive-clip":
        dp["clipped_count_stddev"] = 5.0
    sampled = plan(config(**dp), population=100, per_round=10)
    every = plan(config(**dp), population=10, per_round=10)
    for p, asked in ((sampled, "10 of 100 devices asked per round"), (every, "10 of 10 devices asked per round")):
        (line,) = p.lines
        assert line.startswith(f"planned user-level ε = {p.epsilon:.4g} ({mode}, {p.relation},"), line
        assert "δ = 0.0001" in line and "5 rounds" in line and asked in line
        assert p.relation in ("replace-one", "zero-out") and p.epsilon > 0
    assert every.relation == "zero-out"  # no sample to credit: the plain central figure
    if mode == "central-ftrl":
        assert sampled.relation == "zero-out"  # no credit for sampling
    elif mode != "central-blt":  # BLT: as its ledger labels it (features/dp_mechanisms/blt.py)
        assert sampled.relation == "replace-one" and sampled.epsilon < every.epsilon  # the sample credited


def test_local_dp_and_dp_sgd_plans_name_their_units():
    (line,) = plan(config(mode="local", local_epsilon=2.0), 20, 5).lines
    assert "local, any two texts of one device" in line and "δ = 0.0001" in line and "5 rounds" in line
    central, sample = plan(config(mode="central-client-clip", sgd=True), 20, 5).lines
    assert "add or remove one window" in sample and "5 rounds" in sample


def test_dp_without_a_budget_warns_in_one_line():
    warning = no_budget_warning(config(mode="central-client-clip"))
    assert "dp.max-epsilon = 0" in warning and "\n" not in warning
    assert no_budget_warning(config(mode="central-client-clip", max_epsilon=10.0)) is None
    assert no_budget_warning(config(sgd=True)) is not None  # DP-SGD alone is DP too
    assert no_budget_warning(config()) is None  # no DP: nothing to budget


@pytest.mark.parametrize("dp, says", [
    ({"mode": "local"}, 'dp.mode = "local": it plans the central modes\' dp.noise-multiplier (local DP sets'),
    ({"mode": "none"}, 'dp.mode = "none": it plans the central modes\' dp.noise-multiplier (no server noise'),
    ({"mode": "none", "sgd": True}, "DP-SGD's is dp.sgd-noise-multiplier"),
    ({"mode": "central-client-clip", "max_epsilon": 2.0}, "at most dp.max-epsilon = 2.0"),
    ({"mode": "central-client-clip", "target_epsilon": -1.0}, "expected a number > 0"),
])
def test_target_epsilon_is_refused_where_there_is_no_noise_multiplier_to_plan(dp, says):
    with pytest.raises(ConfigError, match="'dp.target-epsilon'") as e:
        config(**{"target_epsilon": 3.0, **dp}).validate()  # every entry point: run.sh's check, both apps
    assert says in str(e.value)


def test_target_epsilon_sets_the_noise_and_the_plan_meets_it(caplog):
    cfg = config(mode="central-client-clip", target_epsilon=4.0, max_epsilon=5.0)
    with caplog.at_level(logging.INFO, logger="flwr"):
        planned = plan_privacy(cfg, None, 50, 10)
    assert planned.dp.noise_multiplier != cfg.dp.noise_multiplier
    eps = plan(planned, 50, 10).epsilon
    assert 0.99 * 4.0 <= eps <= 4.0
    assert f"planned user-level ε = {eps:.4g}" in caplog.text and "noise multiplier" in caplog.text
    assert "no privacy budget" not in caplog.text


def test_a_resumed_run_keeps_the_noise_it_started_with(caplog, monkeypatch):
    import server_app.privacy_plan

    checkpoint = SimpleNamespace(state={"dp": {"noise_multiplier": 2.5, "target_epsilon": 4.0}})
    start = SimpleNamespace(resume=SimpleNamespace(checkpoint=checkpoint), rounds_left=5)
    # the resumed ledger's plan: tests/integration/test_privacy_plan_run.py, with a real checkpoint
    monkeypatch.setattr(server_app.privacy_plan, "_resumed_ledger", lambda *a: None)
    with caplog.at_level(logging.INFO, logger="flwr"):
        planned = plan_privacy(config(mode="central-client-clip", target_epsilon=4.0), start, 50, 10)
    assert planned.dp.noise_multiplier == 2.5
    assert "noise multiplier 2.5 kept, the one its run started with" in caplog.text
    assert "no privacy budget" in caplog.text  # one warning line, at WARNING
    assert [r.levelname for r in caplog.records if "no privacy budget" in r.message] == ["WARNING"]


# --- simulation or real devices -------------------------------------------------------------------
class Simulated(Grid):
    """A grid the caller built (as tests/inprocess.py does): simulation unless it says otherwise."""

    real_devices = False
    create_message = get_node_ids = push_messages = pull_messages = send_and_receive = set_run = None
    run = None


class Fleet(Simulated):
    real_devices = True


def test_flowers_two_grids_tell_simulation_from_real_devices():
    from tests.unit.test_simulation_polling import simulation

    grid, _ = simulation(2)
    assert isinstance(grid, InMemoryGrid) and not on_real_devices(grid)
    deployed = HttpGrid("127.0.0.1:9091", insecure=True, token="t")  # what flwr-serverapp builds; connects lazily
    assert on_real_devices(deployed)
    assert on_real_devices(Fleet()) and not on_real_devices(Simulated())
    assert on_real_devices(type("Wrapper", (), {})())  # a grid that does not say: real devices (fail closed)


def test_a_grid_of_flowers_other_than_the_simulations_counts_as_real_devices(monkeypatch):
    """Fail closed: a grid a later Flower adds is not taken for a simulation."""
    cls = type("GrpcGrid", (Simulated,), {"__module__": "flwr.superlink.grid.grpc_grid", "real_devices": False})
    assert on_real_devices(cls())


def test_no_dp_is_refused_on_real_devices_and_the_opt_out_runs():
    from server_app.app import _privacy_plan

    with pytest.raises(ConfigError) as e:
        _privacy_plan(config(), Fleet(), None, 5, 5)
    message = str(e.value)
    assert re.search(r"text .*no differential\s+privacy", message)
    assert 'dp.mode = "none"' in message and "real devices" in message and "text" in message  # why
    assert "Set a dp.mode" in message and "dp.allow-no-dp-on-devices=true" in message  # how
    assert _privacy_plan(config(allow_no_dp_on_devices=True), Fleet(), None, 5, 5).dp.mode == "none"
    assert _privacy_plan(config(), Simulated(), None, 5, 5).dp.mode == "none"  # simulation keeps its default
    require_dp_on_devices(config(sgd=True), True)  # DP-SGD alone is DP on the devices
    require_dp_on_devices(config(mode="central-client-clip"), True)


def test_a_run_without_dp_loads_no_accounting():
    """The check runs in every run; under dp.mode "none" it imports nothing of the privacy code."""
    import subprocess

    code = ("import sys; from server_app.app import _privacy_plan; from task.config import Config\n"
            "class G: real_devices = False\n"
            "_privacy_plan(Config(), G(), None, 3, 3)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('dp_accounting', 'task.privacy.ledger', "
            "'task.privacy.mechanisms', 'server_app.privacy_plan'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_config_check_before_flwr_run_prints_the_plan_for_the_simulated_devices():
    """scripts/run.sh's check (scripts/run_simulation.py): the population is --devices."""
    from scripts.run_simulation import check_run_config

    notes: list[str] = []
    dp = 'dp.mode="central-client-clip" dp.delta=1e-3 num-server-rounds=4 fraction-train=0.5'
    assert check_run_config(f"{dp} dp.target-epsilon=20.0 dp.max-epsilon=20.0", 8, notes) is None
    planned, line = notes
    assert "noise multiplier" in planned and "planned for 4 of 8 devices per round" in planned
    assert "replace-one" in line and "δ = 0.001" in line and "4 rounds, 4 of 8 devices asked per round" in line
    epsilon = float(re.search(r"ε = ([\d.]+)", line).group(1))
    assert 0.99 * 20 <= epsilon <= 20
    notes.clear()
    assert check_run_config(f"{dp} dp.max-epsilon=1.0", 8, notes) is None
    assert any("stops the run before its last round" for n in notes)
    notes.clear()
    assert check_run_config(dp, 8, notes) is None and notes[-1].startswith("Warning: no privacy budget")
    notes.clear()
    assert check_run_config("", 8, notes) is None and notes == []  # no DP: no plan, no accounting
    assert "it plans the central modes" in check_run_config('dp.mode="local" dp.target-epsilon=3.0', 8, notes)
