"""Real deployment on 127.0.0.1: a SuperLink with TLS and SuperNode authentication, five
SuperNodes with their own data directories (four that train, one on a metered network that
declines), started with scripts/deployment/deploy.py and stopped after.

Slow by nature (Flower polls every 3 s and starts a ClientApp process per message), so the
model is tiny and runs are 2 rounds.

Real devices refuse a run without DP (server_app/privacy_plan.py): the runs here that go without DP
on purpose set dp.allow-no-dp-on-devices = true (OPT_OUT), and their completing is the opt-out's test.
"""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from scripts.deployment import deploy
from scripts.deployment.deploy_local import local_deployment
from scripts.local_flower import flower_env, run_app
from task.data import personas

PORT = 39393
CONNECTION = "fednextword-test"
TINY = ("model.vocab-size=2000 model.seq-len=12 model.embed-dim=32 model.num-heads=2 model.ffn-dim=64 local-epochs=3 learning-rate=0.01 "
        "server-eval-devices=0")
OPT_OUT = "dp.allow-no-dp-on-devices=true"  # a test fleet: its text may go without DP


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("deployment")
    env = flower_env(root / "flwr-home")
    monkeypatch_module.setenv("FLWR_HOME", env["FLWR_HOME"])  # deploy.* read it from the environment
    data = []
    for i in range(5):
        data.append(root / f"device{i}")
        data[i].mkdir()
        # node1 trains on 40x the text of the others, so that the SecAgg+ test's kill lands while it
        # trains: the margin is its whole training (hundreds of steps), on any machine
        (data[i] / "messages.txt").write_text("\n".join(personas.device_sentences(i, 3200 if i == 1 else 80)))
    # device4 is on a metered network: it declines every message (features/participation/eligibility.py)
    rules = [{"require-charging": False}] * 4 + [{"require-charging": False, "metered-network": True}]
    with local_deployment(root, data, PORT, CONNECTION, device_rules=rules) as d:
        yield {**d, "env": env, "data": data, "rogue": deploy.make_device_key(root / "keys", "rogue")[0]}
    assert not list(d["state"].glob("*.pid")), "a process started here was not stopped"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def metrics(out_dir, run_id):
    return json.loads((out_dir / f"run-{run_id}" / "metrics.json").read_text())


def start_and_wait(command, env, log, timeout=90):
    """Run a SuperNode until it exits; its whole process group is killed afterwards (its
    SuperExec child outlives it)."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code, log.read_text(), time.monotonic() - start


def test_a_supernode_with_an_unregistered_key_is_refused(deployment, tmp_path):
    d = deployment
    cmd = deploy.supernode_command(
        d["public"], d["data"][0], d["certs"]["ca"], d["rogue"], port=PORT + 10, max_retries=2, max_wait_time=20
    )
    code, output, seconds = start_and_wait(cmd, deploy._env(), tmp_path / "rogue.log")
    assert code != 0 and "Failed to activate SuperNode" in output
    assert seconds < 90


def test_a_supernode_without_tls_is_refused(deployment, tmp_path):
    d = deployment
    # A device set up without TLS (and so without a key) talking to the TLS SuperLink.
    cmd = deploy.supernode_command(
        d["public"], d["data"][0], None, None, port=PORT + 11, insecure=True, max_retries=2, max_wait_time=20
    )
    code, output, seconds = start_and_wait(cmd, deploy._env(), tmp_path / "insecure.log")
    assert code != 0 and "Exit Code: 305" in output
    assert seconds < 90


def test_the_devices_side_does_not_answer_the_control_api(deployment):
    """Every device holds ca.crt; where devices connect, nobody may list runs, register devices or
    start runs. The operator's side (127.0.0.1:PORT) does all three."""
    import httpx

    d = deployment
    deploy.write_connection("fednextword-public", d["public"], d["certs"]["ca"])
    public_key = d["rogue"].with_name("rogue.pub")
    for args in (["ls", "fednextword-public", "--format", "json"],
                 ["supernode", "register", str(public_key), "fednextword-public"]):
        out = subprocess.run([str(deploy.BIN / "flwr"), *args], env=deploy._env(), capture_output=True, text=True,
                             timeout=120)
        assert '"success": true' not in out.stdout and "registered successfully" not in out.stdout, out.stdout
    control = "/v1/control/list-runs"
    public = httpx.post(f"https://{d['public']}{control}", verify=str(d["certs"]["ca"]), timeout=30)
    operator = httpx.post(f"https://127.0.0.1:{PORT}{control}", verify=str(d["certs"]["ca"]), timeout=30)
    assert public.status_code == 403 and "only the Fleet API" in public.text
    assert operator.status_code != 403  # the same call reaches the SuperLink on the operator's side
    ls = subprocess.run([str(deploy.BIN / "flwr"), "ls", CONNECTION, "--format", "json"], env=deploy._env(),
                        capture_output=True, text=True, timeout=120)
    assert '"success": true' in ls.stdout, ls.stdout + ls.stderr


def test_a_run_without_dp_is_refused_on_real_devices(deployment, tmp_path):
    """dp.mode = "none" without the opt-out: the ServerApp refuses before any device is asked, and
    the run fails saying why and how. (The runs below set the opt-out and complete.)"""
    outcome = run_app(deployment["env"], connection=CONNECTION, echo=False,
                      run_config=f'num-server-rounds=1 {TINY} min-available-nodes=2 out-dir="{tmp_path}"')
    assert outcome.status == "finished:failed", outcome.output[-3000:]
    assert 'Run refused: dp.mode = "none" (and no dp.sgd) on real devices' in outcome.output, outcome.output[-3000:]
    assert "Set a dp.mode" in outcome.output and "dp.allow-no-dp-on-devices=true" in outcome.output
    assert not list(tmp_path.glob("run-*/metrics.json"))  # no round ran


def test_secure_aggregation_survives_a_device_killed_mid_round(deployment, tmp_path):
    """SecAgg+ over TLS; node1 is killed while it trains in round 1 (its keys and key shares
    sent, its masked update not yet): the others' sum is still recovered (its masks removed with
    the shares its neighbours hold), and round 2 goes on without it. Kills node1: runs before the
    last test. (No DP here: central DP asks a fixed number of devices per round, so a lost one
    stops the run; tests/features/secagg has SecAgg+ with DP.)"""
    d = deployment
    log = d["state"] / "node1.log"
    joined_before = log.read_text().count("training for secure aggregation, round 1")
    online = _online_nodes(d["connection"])  # before the run: the kill below must not wait for a CLI call
    result = {}
    run = threading.Thread(target=lambda: result.update(outcome=run_app(
        d["env"], connection=CONNECTION, echo=False,
        run_config=(f"num-server-rounds=2 {TINY} max-local-steps=0 min-available-nodes=2 min-train-nodes=2 "
                    "min-evaluate-nodes=2 round-timeout=900.0 secagg.enabled=true "
                    # with 5 devices asked, one declining and one killed, every device must be a
                    # neighbour of every other for 3 shares to survive
                    f'secagg.num-shares=5 secagg.reconstruction-threshold=3 {OPT_OUT} out-dir="{tmp_path}"'))))
    run.start()
    deadline = time.monotonic() + 900
    while log.read_text().count("training for secure aggregation, round 1") == joined_before:
        assert time.monotonic() < deadline and run.is_alive(), "node1 never trained in round 1"
        time.sleep(0.2)
    _kill_node(d["state"], "node1")
    masked_before_the_kill = log.read_text().count("update masked for secure aggregation")
    killed = _wait_until_offline(d, online)
    run.join(timeout=1800)
    outcome = result["outcome"]
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    rows = metrics(tmp_path, outcome.run_id)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert not masked_before_the_kill, "node1 finished training before the kill: the test did not kill it mid-round"
    assert rows[1]["train_replied"] == 3 and rows[1]["train_failed"] == 1 and rows[1]["train_not_eligible"] == 1
    secure = [line for line in outcome.output.splitlines() if "ecure aggregation" in line]
    assert any("the sum of 3 masked updates unmasked" in line for line in secure), secure
    assert [f for r in rows[1:] for f in r["failures"]], rows  # published as categories and counts, no node ids
    failed = re.findall(r"device failed: node (\d+)", outcome.output)  # the node ids: in the operator's log only
    assert {int(n) for n in failed} == {killed}, (failed, killed)
    assert rows[2]["train_replied"] == 3
    assert rows[-1]["eval_loss"] < rows[1]["eval_loss"]  # it learns through SecAgg+


def test_a_federated_run_over_tls_learns_and_a_device_killed_mid_run_does_not_stop_it(deployment, tmp_path):
    """Runs last: it kills node2 (node1 is gone already) during round 1. The device on a metered
    network declines every round, counted apart from failures; minimums of 2 devices let the run go
    on without node2, and the model still learns over TLS."""
    d = deployment
    online = _online_nodes(d["connection"])
    result = {}
    run = threading.Thread(target=lambda: result.update(outcome=run_app(
        d["env"], connection=CONNECTION, echo=False,
        run_config=(f"num-server-rounds=3 {TINY} min-available-nodes=2 min-train-nodes=2 min-evaluate-nodes=2 "
                    f'round-timeout=900.0 {OPT_OUT} out-dir="{tmp_path}"'))))
    run.start()
    deadline = time.monotonic() + 900
    while not list(tmp_path.glob("run-*/metrics.json")):
        assert time.monotonic() < deadline and run.is_alive(), "the run never recorded its round 0"
        time.sleep(1)  # round 0 is recorded just before round 1 starts
    _kill_node(d["state"], "node2")
    killed = _wait_until_offline(d, online)
    run.join(timeout=1800)
    outcome = result["outcome"]
    assert outcome.status == "finished:completed", outcome.output[-3000:]  # the opt-out runs on real devices
    assert "Run refused" not in outcome.output
    rows = metrics(tmp_path, outcome.run_id)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    # node2 died during round 1 (or before it was asked): the failure names which device and why,
    # and later rounds go on with the other two
    # published as categories with counts, no node ids (task/releases.py); the ids are in the operator's log
    failures = [f for r in rows[1:] for f in r["failures"]]
    assert failures and all(re.match(r"(device offline|no reply within round-timeout).*: \d+$", f)
                            for f in failures), failures
    failed = re.findall(r"device failed: node (\d+): (?:device offline|no reply within round-timeout)", outcome.output)
    assert {int(n) for n in failed} == {killed}, (failed, killed)
    assert all((r["train_not_eligible"], r["eval_not_eligible"]) == (1, 1) for r in rows[1:])
    assert rows[-1]["train_replied"] == 2 and rows[-1]["eval_replied"] == 2
    assert rows[-1]["eval_loss"] < rows[1]["eval_loss"]
    print(f"deployment: {outcome.seconds:.0f} s for 3 rounds; per round: {[r.get('seconds') for r in rows]}")


def _online_nodes(connection) -> set[int]:
    out = subprocess.run([str(deploy.BIN / "flwr"), "supernode", "list", connection, "--format", "json"],
                         env=deploy._env(), capture_output=True, text=True, timeout=60)
    return {int(n["node-id"]) for n in json.loads(out.stdout).get("nodes", []) if n.get("status") == "online"}


def _wait_until_offline(d, online: set[int]) -> int:
    """The node id of the SuperNode just killed, once the SuperLink lists it offline."""
    deadline = time.monotonic() + 900
    while (gone := online - _online_nodes(d["connection"])) == set():
        assert time.monotonic() < deadline, "the SuperLink never listed the killed SuperNode offline"
        time.sleep(3)
    (node,) = gone
    return node


def _kill_node(state, name):
    pidfile = state / f"{name}.pid"
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    pidfile.unlink()
