"""Watching and resuming runs: checkpoints (format, damage, pruning), resume refusals, metrics
files and plots, and end to end: a resumed run and a run killed mid-way then resumed."""

import csv
import json
import threading
import time

import numpy as np
import pytest

from scripts.local_flower import private_flower, run_app, stop_run
from server_app.resume import dp_settings, load_resume_point
from task import plots
from task.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    latest_valid_checkpoint,
    load_checkpoint,
    model_fingerprint,
    prune,
    save_checkpoint,
)
from task.config import Config, ConfigError, ModelConfig
from task.privacy import PrivacyLedger
from task.vocab import default_vocabulary

SMALL = ("vocab-size=2000 seq-len=12 embed-dim=32 num-heads=2 ffn-dim=64 dropout=0.0 "
         "local-epochs=2 learning-rate=0.01 sentences-per-device=100 server-eval-devices=3")
DP = 'dp-mode="central-client-clip" dp-noise-multiplier=2.0 dp-clipping-norm=0.5 dp-delta=1e-3'


# --- checkpoints ----------------------------------------------------------------------------------
def weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]


def test_a_checkpoint_round_trips_weights_and_state(tmp_path):
    path = checkpoint_path(tmp_path, 7)
    save_checkpoint(path, Checkpoint(7, weights(), {"privacy": {"central_noise": [1.0, 0.5]}}))
    loaded = load_checkpoint(path)
    assert loaded.round == 7 and loaded.state["privacy"] == {"central_noise": [1.0, 0.5]}
    for a, b in zip(loaded.weights, weights()):
        np.testing.assert_array_equal(a, b)
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_checkpoint_is_refused_naming_it_and_the_previous_one_is_used(tmp_path, damage):
    for r in (1, 2):
        save_checkpoint(checkpoint_path(tmp_path, r), Checkpoint(r, weights(r)))
    newest = checkpoint_path(tmp_path, 2)
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # a flipped byte inside the first array's data: its zip CRC no longer matches
        i = data.index(b"NUMPY") + 200
        newest.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        newest.write_bytes(b"")
    with pytest.raises(CheckpointError, match="round-002.npz: damaged or truncated"):
        load_checkpoint(newest)
    checkpoint, notes = latest_valid_checkpoint(tmp_path)
    assert checkpoint.round == 1
    assert len(notes) == 1 and "round-002.npz" in notes[0]


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    for r in range(6):
        save_checkpoint(checkpoint_path(tmp_path, r), Checkpoint(r, weights()))
    prune(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-004.npz", "round-005.npz"]


# --- resume refusals ------------------------------------------------------------------------------
def saved_run(tmp_path, cfg: Config, rounds=2) -> None:
    fingerprint = model_fingerprint(cfg, default_vocabulary(cfg.model.vocab_size).words)
    ledger = PrivacyLedger(cfg.dp, 3, 3)
    rows = []
    for r in range(rounds + 1):
        state = {"fingerprint": fingerprint, "dp": dp_settings(cfg), "strategy": {}, "privacy": ledger.state_dict()}
        save_checkpoint(checkpoint_path(tmp_path, r), Checkpoint(r, weights(), state))
        rows.append({"round": r})
    (tmp_path / "metrics.json").write_text(json.dumps(rows))


def fingerprint_of(cfg: Config, vocab_size=None) -> dict:
    return model_fingerprint(cfg, default_vocabulary(vocab_size or cfg.model.vocab_size).words)


def test_resume_refuses_another_model_shape_vocabulary_dp_or_a_finished_run(tmp_path):
    cfg = Config(model=ModelConfig(vocab_size=2000, embed_dim=32, num_heads=2, ffn_dim=64), num_server_rounds=4,
                 resume_from=str(tmp_path))
    saved_run(tmp_path, cfg)
    point = load_resume_point(cfg, fingerprint_of(cfg))
    assert point.round == 2 and [r["round"] for r in point.rows] == [0, 1, 2]
    wider = cfg.replace(model=ModelConfig(vocab_size=2000, embed_dim=48, num_heads=2, ffn_dim=64))
    with pytest.raises(ConfigError, match=r"different model shape.*'embed_dim': \(32, 48\)"):
        load_resume_point(wider, fingerprint_of(wider))
    other_words = fingerprint_of(cfg) | {"vocab_sha256": fingerprint_of(cfg, 3000)["vocab_sha256"]}
    with pytest.raises(ConfigError, match="different vocabulary"):
        load_resume_point(cfg, other_words)
    noisier = cfg.replace(dp=cfg.dp.__class__(mode="local"))
    with pytest.raises(ConfigError, match="other DP settings.*'mode': \\('none', 'local'\\)"):
        load_resume_point(noisier, fingerprint_of(noisier))
    with pytest.raises(ConfigError, match="'num-server-rounds' = 2.*already done 2 rounds"):
        load_resume_point(cfg.replace(num_server_rounds=2), fingerprint_of(cfg))
    with pytest.raises(ConfigError, match="server-optimizer='fedadam'.*not checkpointed"):
        load_resume_point(cfg.replace(server_optimizer="fedadam"), fingerprint_of(cfg))
    with pytest.raises(ConfigError, match="'resume-from'.*no such run directory"):
        load_resume_point(cfg.replace(resume_from=str(tmp_path / "nope")), fingerprint_of(cfg))
    for r in range(3):  # every checkpoint damaged: refused, naming them
        checkpoint_path(tmp_path, r).write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ConfigError, match="no usable checkpoint.*round-002.npz"):
        load_resume_point(cfg, fingerprint_of(cfg))


# --- plots ----------------------------------------------------------------------------------------
def test_the_plot_command_draws_one_or_several_runs(tmp_path):
    rows = [{"round": r, "eval_loss": 6 - r, "eval_top3": 0.1 * r, "server_loss": 6.5 - r, "server_top3": 0.09 * r,
             "dp_epsilon_central": 2.0 * r, "dp_delta": 1e-5} for r in range(4)]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps(rows[:2]))
    out = tmp_path / "compare.png"
    assert plots.main([str(tmp_path / "a"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    (tmp_path / "bad.json").write_text('{"not": "rows"}')
    with pytest.raises(SystemExit, match="bad.json: not a metrics file"):
        plots.main([str(tmp_path / "bad.json"), "--out", str(out)])


# --- end to end -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flower(tmp_path_factory):
    # Own FLWR_HOME and ports: never touches a SuperLink the user may be running.
    with private_flower(tmp_path_factory.mktemp("flwr-home"), 39591, 39593, must_stop=True) as env:
        yield env


COUNTS = {f"train_{k}" for k in ("sampled", "replied", "failed", "bytes_sent", "bytes_received", "compute_seconds")}


def read(out, run_id, name="metrics.json"):
    return json.loads((out / f"run-{run_id}" / name).read_text())


def test_metrics_files_have_a_row_per_round_matching_the_log_and_a_plot(flower, tmp_path):
    outcome = run_app(flower, num_supernodes=3, echo=False,
                      run_config=f'num-server-rounds=2 {SMALL} {DP} out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    rows = read(tmp_path, outcome.run_id)
    assert [r["round"] for r in rows] == [0, 1, 2]
    with open(tmp_path / f"run-{outcome.run_id}" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(t["round"]) for t in table] == [0, 1, 2]
    for row, line in zip(rows[1:], table[1:]):
        assert float(line["eval_top3"]) == pytest.approx(row["eval_top3"])
        assert float(line["dp_epsilon_central"]) == pytest.approx(row["dp_epsilon_central"])
        assert int(line["train_bytes_sent"]) == row["train_bytes_sent"] > 3 * 4 * 100_000  # 3 models sent
        assert row["train_bytes_received"] > 0 and row["eval_bytes_sent"] > 0
        # under DP the devices sent nothing about their training but the weight FedAvg needs,
        # and the server stored nothing per device (no loss, no norm bit, no compute time)
        assert not [k for k in row if k.startswith("train_") and k not in COUNTS], row
        # the log line of the same round shows the same numbers
        assert f"round {row['round']}: train 3/3 devices (0 failed) | eval" in outcome.output
        assert f"top-3 {row['eval_top3']:.1%}" in outcome.output
    summary = read(tmp_path, outcome.run_id, "summary.json")
    assert summary["best_eval_top3"] == max(r["eval_top3"] for r in rows[1:])
    assert (tmp_path / f"run-{outcome.run_id}" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot:" in outcome.output and "Privacy: central-client-clip" in outcome.output


def test_a_resumed_run_continues_the_model_and_the_privacy_budget(flower, tmp_path):
    first = run_app(flower, num_supernodes=3, echo=False,
                    run_config=f'num-server-rounds=2 {SMALL} {DP} out-dir="{tmp_path}"')
    assert first.status == "finished:completed", first.output[-3000:]
    resumed = run_app(flower, num_supernodes=3, echo=False, run_config=(
        f'num-server-rounds=4 {SMALL} {DP} out-dir="{tmp_path}" resume-from="{tmp_path / f"run-{first.run_id}"}"'))
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    before, after = read(tmp_path, first.run_id), read(tmp_path, resumed.run_id)
    assert [r["round"] for r in after] == [0, 1, 2, 3, 4]
    assert after[:3] == before  # the history is carried over unchanged
    assert after[3]["server_loss"] != before[2]["server_loss"]
    # epsilon after 4 releases, as an uninterrupted 4-round run has it (same computation, 4 releases)
    cfg = Config.from_run_config({"dp-mode": "central-client-clip", "dp-noise-multiplier": 2.0,
                                  "dp-clipping-norm": 0.5, "dp-delta": 1e-3})
    uninterrupted = PrivacyLedger(cfg.dp, 3, 3)
    for _ in range(4):
        uninterrupted.record_central([2.0])
    assert after[-1]["dp_central_releases"] == 4
    assert after[-1]["dp_epsilon_central"] == pytest.approx(uninterrupted.central_epsilon(), rel=1e-9)
    assert after[-1]["dp_most_rounds_per_device"] == 4  # every device asked in all 4 rounds, across the resume
    assert f"= {uninterrupted.central_epsilon():.3f} at δ = 0.001" in resumed.output


def test_a_run_killed_mid_way_resumes_losing_at_most_the_round_in_progress(flower, tmp_path):
    out = tmp_path / "out"
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(o=run_app(
        flower, num_supernodes=3, echo=False, run_config=f'num-server-rounds=30 {SMALL} out-dir="{out}"')))
    worker.start()
    deadline = time.monotonic() + 600
    while not list(out.glob("run-*/checkpoints/round-002.npz")) and time.monotonic() < deadline:
        time.sleep(0.5)
    run_dir = next(out.glob("run-*"))
    run_id = int(run_dir.name.removeprefix("run-"))
    stop_run(flower, run_id)  # the ServerApp dies a few rounds later (a small round takes ~1-2 s)
    worker.join(timeout=300)
    assert outcome["o"].status == "finished:stopped"
    # `flwr stop` marks the run stopped before its ServerApp process is gone: wait until no
    # checkpoint has appeared for 10 s (a round of this small model takes 1-2 s)
    names, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 10:
        now = sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.npz"))
        if now != names:
            names, stable_since = now, time.monotonic()
        time.sleep(0.5)
    killed_rows = json.loads((run_dir / "metrics.json").read_text())
    done = max(int(name.removeprefix("round-").removesuffix(".npz")) for name in names)
    assert 2 <= done < 30
    # every checkpointed round has its metrics row; at most the round being saved is ahead of them
    assert done <= max(r["round"] for r in killed_rows) <= done + 1
    killed_rows = [r for r in killed_rows if r["round"] <= done]
    resumed = run_app(flower, num_supernodes=3, echo=False,  # one more round than the killed run finished
                      run_config=f'num-server-rounds={done + 1} {SMALL} out-dir="{out}" resume-from="{run_dir}"')
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    rows = read(out, resumed.run_id)
    assert [r["round"] for r in rows] == list(range(done + 2))
    assert rows[: done + 1] == killed_rows  # every finished round was kept
