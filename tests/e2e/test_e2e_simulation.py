"""End to end: the real `flwr run .` on a private local SuperLink, checked like a user would.

`flwr run` exits 0 even when the run fails, so each test asks `flwr ls` for the run's status and
reads the metrics the ServerApp wrote. Every process started here is stopped afterwards. The
mechanisms a run composes are tested in whole runs in one process (tests/integration,
tests/features); here, that Flower's own processes run the apps: one run is enough. It runs on a
real two-node Ray cluster (one CPU per node, the same two ClientApps at a time as the default on
this machine), which is how a simulation outgrows one machine (README): the plain, single-Ray path
is the other e2e tests'.
"""

import json

import pytest

from scripts.deployment.ray_cluster import actors, alive_nodes, local_ray_cluster, processes_of
from scripts.local_flower import private_flower, run_app
from scripts.tools.export_litert import main as export_main
from task.litert.suggest import Suggester
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=3 learning-rate=0.01 data.sentences-per-device=120"


def rows(out_dir, run_id):
    return json.loads((out_dir / f"run-{run_id}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two raylets on 127.0.0.1 and a private SuperLink whose simulations attach to them; the
    test module checks afterwards that not one of their processes is left."""
    with local_ray_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1) as ray_cluster:
        with private_flower(tmp_path_factory.mktemp("flwr-home-ray"), 39291, 39293, must_stop=True,
                            ray_address=ray_cluster.address, extra=ray_cluster.env) as env:
            yield ray_cluster, env
    assert not processes_of(ray_cluster), "processes of the Ray cluster are left running"


def test_builtin_federation_on_a_two_node_ray_cluster_learns_and_beats_the_baselines(cluster, tmp_path):
    ray_cluster, env = cluster
    nodes = {n["id"] for n in alive_nodes(ray_cluster)}
    assert len(nodes) == 2
    outcome = run_app(env, num_supernodes=3, echo=False,
                      run_config=f"num-server-rounds=3 {SMALL} server-eval-devices=4 out-dir=\"{tmp_path}\"")
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    # Ray's own records: the run's ClientApps ran in one actor on each of the two nodes
    ran = actors(ray_cluster)
    assert {a["node"] for a in ran} == nodes, ran
    metrics = rows(tmp_path, outcome.run_id)
    assert [r["round"] for r in metrics] == [0, 1, 2, 3]
    first, last = metrics[1], metrics[-1]
    assert all(r["train_replied"] == 3 and r["eval_replied"] == 3 for r in metrics[1:])
    assert last["eval_loss"] < first["eval_loss"] - 0.3
    assert last["server_loss"] < metrics[0]["server_loss"] - 0.3  # vs the untrained model
    assert last["eval_top3"] > last["eval_baseline_unigram_top3"]
    # Keystroke savings (task/keystrokes.py) grow as the model learns, and are reported
    assert 0 <= metrics[0]["eval_keystroke_savings"] < last["eval_keystroke_savings"] < 1
    assert 0 < last["eval_baseline_bigram_keystroke_savings"] < 1
    assert "keystroke savings" in outcome.output
    # Personalised on each device, at the point each device chose itself (task/personal.py): beats
    # the device's own bigram and the shared model, and hurts no device by more than one prediction
    assert last["eval_personal_top3"] > last["eval_baseline_bigram_top3"]
    assert last["eval_personal_top3"] > last["eval_top3"] and last["eval_personal_hurt"] == 0
    assert last["eval_personal_keystroke_savings"] > last["eval_baseline_bigram_keystroke_savings"]
    assert "Personalised on each device" in outcome.output
    run_dir = tmp_path / f"run-{outcome.run_id}"
    assert (run_dir / "final" / "model.keras").stat().st_size > 0
    assert (run_dir / "final" / "vocab.json").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"round-00{i}.npz" for i in range(4)]
    assert "Federated evaluation on the devices' held-out text" in outcome.output
    # The server exported the final model for devices; any checkpoint can be exported too.
    # ... each file checked against the Keras model, its agreement recorded (docs/on-device.md)
    check = json.loads((run_dir / "summary.json").read_text())["litert_check"]
    assert check["float32"]["fit_to_ship"] and check["float32"]["positions"] > 100
    assert all(0 <= c["top3_agreement"] <= 1 for c in check.values()), check
    assert Suggester.from_files(check["int8"]["file"]).suggest("see you")
    assert export_main([str(run_dir), "--round", "1", "--variants", "int8"]) == 0
    assert Suggester.from_files(run_dir / "litert-round-001" / "model-int8.tflite").suggest("")


def test_the_runner_never_sends_a_run_to_somebody_elses_superlink(tmp_path):
    from scripts.local_flower import private_flower

    with private_flower(tmp_path / "theirs", 39791, 39793, must_stop=True):  # somebody else's, on our ports
        with pytest.raises(RuntimeError, match="another SuperLink already answers on 127.0.0.1:39791"):
            with private_flower(tmp_path / "ours", 39791, 39793):
                pass
