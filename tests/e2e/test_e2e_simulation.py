"""End to end: the real `flwr run .` on a private local SuperLink, checked like a user would.

`flwr run` exits 0 even when the run fails, so each test asks `flwr ls` for the run's status and
reads the metrics the ServerApp wrote. Every process started here is stopped afterwards.
"""

import json

import pytest

from scripts.tools.export_litert import main as export_main
from scripts.local_flower import run_app
from task.data import personas
from task.litert.suggest import Suggester
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=3 learning-rate=0.01 data.sentences-per-device=120"




def rows(out_dir, run_id):
    return json.loads((out_dir / f"run-{run_id}" / "metrics.json").read_text())


def test_builtin_federation_learns_and_beats_the_unigram_baseline(flower, tmp_path):
    outcome = run_app(flower, num_supernodes=3, echo=False,
                      run_config=f"num-server-rounds=3 {SMALL} server-eval-devices=4 out-dir=\"{tmp_path}\"")
    assert outcome.status == "finished:completed", outcome.output[-3000:]
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


def test_the_default_run_beats_the_per_device_bigram_baseline(flower, tmp_path):
    """The template's main job, with every default (10 built-in devices, 30 rounds): the global
    model must suggest better than a bigram each device could fit on its own text alone, in top-3
    and in keystrokes saved (issue "As good as training on the server")."""
    outcome = run_app(flower, num_supernodes=10, echo=False, run_config=f'out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    metrics = rows(tmp_path, outcome.run_id)
    last = metrics[-1]
    assert last["round"] == 30 and last["eval_replied"] == 10
    assert last["eval_top3"] > last["eval_baseline_bigram_top3"]
    assert last["eval_keystroke_savings"] > last["eval_baseline_bigram_keystroke_savings"]
    assert last["server_top3"] > metrics[0]["server_top3"] + 0.3  # unseen users gain too


def test_one_device_with_unusable_text_does_not_stop_the_run(flower, tmp_path):
    data = tmp_path / "devices"
    data.mkdir()
    for i in range(3):
        (data / f"device{i}.txt").write_text("\n".join(personas.device_sentences(i, 60)))
    (data / "device3.txt").write_text("   \n")  # this device has no usable text
    out = tmp_path / "out"
    outcome = run_app(flower, num_supernodes=4, echo=False,
                      run_config=f'num-server-rounds=2 {SMALL} data.source="text-dir" data.path="{data}" '
                                 f'data.partitioner="natural" server-eval-devices=0 out-dir="{out}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    metrics = rows(out, outcome.run_id)
    for r in metrics[1:]:
        assert (r["train_replied"], r["train_failed"]) == (3, 1)
        # device3.txt has no sentence, so the 4th device has no text: it says so, every round, by
        # category only (its file names and paths stay in its own log)
        assert r["failures"] and all(f.endswith(": partition has no text") for f in r["failures"]), r["failures"]
        assert not any(str(tmp_path) in f or "device3" in f for f in r["failures"])
    assert metrics[-1]["eval_loss"] < metrics[1]["eval_loss"]
    assert "device failed" in outcome.output


def test_a_run_where_every_device_fails_ends_with_a_summary_not_a_crash(flower, tmp_path):
    out = tmp_path / "out"
    outcome = run_app(flower, num_supernodes=3, echo=False,
                      run_config=f'num-server-rounds=1 {SMALL} data.source="text-dir" '
                                 f'data.path="{tmp_path / "missing"}" server-eval-devices=0 out-dir="{out}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    summary = json.loads((out / f"run-{outcome.run_id}" / "summary.json").read_text())
    assert summary["final"] == {} and summary["rounds"] == 1  # a summary, with no model quality to report
    last = rows(out, outcome.run_id)[-1]
    assert (last["train_failed"], last["eval_failed"]) == (3, 3)
    assert all(f.endswith(": data-path does not exist") for f in last["failures"]), last["failures"]


def test_a_population_with_availability_and_stragglers_closes_rounds_at_their_goal(flower, tmp_path):
    """10 simulated devices over a night (20:00 to 04:00), half of the day charging on Wi-Fi, two
    of them 20 s slow; each round asks 6 and closes at 4 updates (client_app/eligibility.py)."""
    outcome = run_app(flower, num_supernodes=10, echo=False,
                      run_config=f'num-server-rounds=6 {SMALL} fraction-train=0.4 participation.selection-factor=1.5 '
                                 'participation.availability="nightly" participation.eligible-share=0.5 participation.hours-per-round=2.0 '
                                 f'participation.stragglers=0.2 participation.straggler-seconds=20.0 server-eval-devices=4 '
                                 f'out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    metrics = rows(tmp_path, outcome.run_id)
    trained = metrics[1:]
    for r in trained:
        assert r["train_sampled"] == 6 and r["train_replied"] <= 4 and r["train_failed"] == 0, r
        assert r["train_replied"] + r["train_late"] + r["train_busy"] + r["train_not_eligible"] == 6, r
    # The evening's first round finds most devices unplugged; by night the rounds fill up, and a
    # round that reached its goal did not wait for the devices still out (a straggler, or one
    # queued behind it: 2 simulation workers).
    assert trained[0]["train_not_eligible"] > trained[-1]["train_not_eligible"]
    assert any(r["train_replied"] == 4 and r["train_late"] >= 1 for r in trained), trained
    assert "duplicate reply" not in outcome.output  # a late device is not asked again while busy
    assert metrics[-1]["server_loss"] < metrics[0]["server_loss"] - 0.3  # and the model still learned
    # What it cost the devices, per round and over the run
    assert all(r["train_energy_joules"] > 0 and r["train_cpu_seconds"] > 0 and r["train_peak_memory_mb"] > 0
               for r in trained if r["train_replied"])
    run_dir = tmp_path / f"run-{outcome.run_id}"
    cost = json.loads((run_dir / "summary.json").read_text())["device_cost"]
    assert cost["devices_replied"] <= cost["devices_asked"] <= 10
    assert cost["mb_down_per_message"] > 0.1 and cost["joules_per_participant"] > 0 and cost["mb_per_device"] > 0
    assert "Device cost: a device asked to take part moved" in outcome.output
    assert (run_dir / "participation.png").stat().st_size > 0


def test_the_runner_never_sends_a_run_to_somebody_elses_superlink(tmp_path):
    from scripts.local_flower import private_flower

    with private_flower(tmp_path / "theirs", 39791, 39793, must_stop=True):  # somebody else's, on our ports
        with pytest.raises(RuntimeError, match="another SuperLink already answers on 127.0.0.1:39791"):
            with private_flower(tmp_path / "ours", 39791, 39793):
                pass
