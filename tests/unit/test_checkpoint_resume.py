"""Watching and resuming runs without Flower: checkpoints (format, damage, pruning), resume
refusals and the plot command (whole runs: tests/integration/test_runs.py)."""

import json

import numpy as np
import pytest

from server_app.resume import dp_settings, load_resume_point
from task.config import Config, ConfigError, ModelConfig
from task.data.vocab import default_vocabulary
from task.privacy.ledger import PrivacyLedger
from task.run import plots
from task.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    latest_valid_checkpoint,
    load_checkpoint,
    model_fingerprint,
    prune,
    save_checkpoint,
)


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


# --- the privacy ledger's write-ahead journal (outside DP review, B4) -----------------------------
def _journaled_run(tmp_path, cfg: Config):
    """A run directory with round 1 booked and checkpointed, the ledger journaled in it."""
    from server_app.privacy import ledger_for
    from task.privacy.ledger import JOURNAL

    run_dir = tmp_path / "run-1"
    ledger = ledger_for(cfg, 3, 3, None, journal=run_dir / JOURNAL)
    fingerprint = fingerprint_of(cfg)
    ledger.check_discovery(0.7, 1e-6)  # round 1's discovery, then its devices
    ledger.record_discovery(0.6, 1e-6)
    ledger.check_next_round()
    ledger.record_asked_to_train([1, 2, 3])
    state = {"fingerprint": fingerprint, "dp": dp_settings(cfg), "strategy": {}, "privacy": ledger.state_dict()}
    save_checkpoint(checkpoint_path(run_dir, 1), Checkpoint(1, weights(), state))
    (run_dir / "metrics.json").write_text(json.dumps([{"round": 0}, {"round": 1}]))
    return run_dir, ledger


def _resumed_ledger(tmp_path, cfg: Config, run_dir):
    from server_app.privacy import ledger_for
    from task.privacy.ledger import JOURNAL

    point = load_resume_point(cfg.replace(resume_from=str(run_dir)), fingerprint_of(cfg))
    assert point.round == 1  # the crashed round never reached its checkpoint
    return ledger_for(cfg, 3, 3, point, journal=tmp_path / "run-2" / JOURNAL)


def _private_config() -> Config:
    from task.config import DPConfig

    return Config(model=ModelConfig(vocab_size=2000, embed_dim=32, num_heads=2, ffn_dim=64), num_server_rounds=4,
                  dp=DPConfig(mode="local", sgd=True, local_epsilon=2.0, delta=1e-3))


def test_a_crash_between_the_replies_and_the_checkpoint_loses_no_charge_on_resume(tmp_path):
    """Round 2 books its discovery and its devices (local DP, DP-SGD), the devices reply, and the
    server dies before round 2's checkpoint. The resumed ledger must hold every charge of round 2:
    its local, sample and discovery epsilons are at least what the crashed ledger had booked."""
    cfg = _private_config()
    run_dir, ledger = _journaled_run(tmp_path, cfg)
    at_checkpoint = ledger.report()
    ledger.check_discovery(0.7, 1e-6)
    ledger.record_discovery(0.6, 1e-6)
    ledger.check_next_round()
    ledger.record_asked_to_train([1, 2, 3])  # the messages are sent after this returns; replies come back
    crashed = ledger.report()  # ... and the process dies: nothing else of round 2 is written
    del ledger
    resumed = _resumed_ledger(tmp_path, cfg, run_dir).report()
    for key in ("epsilon-local", "epsilon-sample", "epsilon-discovery", "delta-discovery"):
        assert resumed[key] == pytest.approx(crashed[key]) and resumed[key] > at_checkpoint[key], key
    assert resumed["most-rounds-per-device"] == 2 and resumed["discoveries"] == 2
    # the resumed run journals in its own directory at once, so a crash of it loses nothing either
    assert json.loads((tmp_path / "run-2" / "privacy-ledger.json").read_text())["carried_participations"] == 2


def test_a_discovery_is_charged_in_full_before_it_runs_and_a_crash_mid_way_keeps_it(tmp_path):
    cfg = _private_config()
    run_dir, ledger = _journaled_run(tmp_path, cfg)
    ledger.check_discovery(0.7, 2e-6)  # round 2's discovery starts: its full plan is booked ...
    del ledger  # ... and the server dies during its levels
    resumed = _resumed_ledger(tmp_path, cfg, run_dir)
    assert resumed.discovery_spent() == pytest.approx((0.6 + 0.7, 1e-6 + 2e-6))


def test_the_journal_keeps_no_count_per_device_and_is_not_taken_when_behind(tmp_path):
    cfg = _private_config()
    run_dir, ledger = _journaled_run(tmp_path, cfg)
    journal = json.loads((run_dir / "privacy-ledger.json").read_text())
    assert journal == ledger.state_dict() and "participations" not in journal  # the checkpoint's rule
    # a journal behind the checkpoint (e.g. restored from a backup) does not lower the charges
    ledger.record_asked_to_train([1])
    state = {"fingerprint": fingerprint_of(cfg), "dp": dp_settings(cfg), "strategy": {}, "privacy": ledger.state_dict()}
    save_checkpoint(checkpoint_path(run_dir, 1), Checkpoint(1, weights(), state))
    (run_dir / "privacy-ledger.json").write_text(json.dumps(journal))
    ledger.close()  # run-1 ends
    assert _resumed_ledger(tmp_path, cfg, run_dir).most_participations() == 2


# --- one budget per lineage (outside DP review, J1) -----------------------------------------------
def _continued(tmp_path, cfg: Config, source, name: str):
    """A run `name` resuming `source` (the ledger as server_app/app.py makes it)."""
    from server_app.privacy import ledger_for
    from task.privacy.ledger import JOURNAL

    point = load_resume_point(cfg.replace(resume_from=str(source)), fingerprint_of(cfg))
    return ledger_for(cfg, 3, 3, point, journal=tmp_path / name / JOURNAL)


def test_resuming_a_run_again_keeps_the_charges_of_a_run_that_continued_it_and_died_before_its_checkpoint(tmp_path):
    """The reviewer's case: run-2 resumes run-1, books two rounds and dies before its first
    checkpoint, so it cannot be resumed itself. Resuming run-1 again must charge run-2's rounds."""
    cfg = _private_config()
    run_dir, first = _journaled_run(tmp_path, cfg)
    first.close()  # run-1 ends
    second = _continued(tmp_path, cfg, run_dir, "run-2")
    for _ in range(2):
        second.check_next_round()
        second.record_asked_to_train([1, 2, 3])
    crashed = second.report()
    del second  # dies: run-2 has no checkpoint
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        load_resume_point(cfg.replace(resume_from=str(tmp_path / "run-2")), fingerprint_of(cfg))
    third = _continued(tmp_path, cfg, run_dir, "run-3")
    assert third.most_participations() == 3 and third.report()["epsilon-local"] == pytest.approx(crashed["epsilon-local"])
    # run-3 books in run-1's journal too (and run-2's is left as it was): a fourth resume of run-1 sees it
    third.check_next_round()
    third.record_asked_to_train([1, 2, 3])
    third.close()  # run-3 ends
    assert _continued(tmp_path, cfg, run_dir, "run-4").most_participations() == 4
    # run-4 books in run-1's and in those of the runs that continued run-1 (named by run-1's journal)
    assert json.loads((run_dir / "privacy-ledger.json").read_text())["lineage"] == [
        str((tmp_path / name).resolve()) for name in ("run-2", "run-3", "run-1", "run-4")]


def test_a_resume_from_a_continued_runs_checkpoint_takes_the_journal_furthest_ahead_in_its_lineage(tmp_path):
    """run-2 resumes run-1 and checkpoints; run-3 resumes run-1 again (carrying run-2's charges) and
    books more; resuming run-2 then carries run-3's too (they are in run-1's journal)."""
    cfg = _private_config()
    run_dir, first = _journaled_run(tmp_path, cfg)
    first.close()
    second = _continued(tmp_path, cfg, run_dir, "run-2")
    second.check_next_round()
    second.record_asked_to_train([1, 2, 3])
    state = {"fingerprint": fingerprint_of(cfg), "dp": dp_settings(cfg), "strategy": {}, "privacy": second.state_dict()}
    save_checkpoint(checkpoint_path(tmp_path / "run-2", 2), Checkpoint(2, weights(), state))
    (tmp_path / "run-2" / "metrics.json").write_text(json.dumps([{"round": r} for r in range(3)]))
    second.close()
    third = _continued(tmp_path, cfg, run_dir, "run-3")
    for _ in range(2):
        third.record_asked_to_train([1, 2, 3])
    assert third.most_participations() == 4
    third.close()
    assert _continued(tmp_path, cfg, tmp_path / "run-2", "run-4").most_participations() == 4


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from server_app.privacy import ledger_for
from server_app.resume import load_resume_point
from task.config import Config, DPConfig, ModelConfig
from task.data.vocab import default_vocabulary
from task.run.checkpoint import model_fingerprint
cfg = Config(model=ModelConfig(vocab_size=2000, embed_dim=32, num_heads=2, ffn_dim=64), num_server_rounds=4,
             dp=DPConfig(mode="local", sgd=True, local_epsilon=2.0, delta=1e-3), resume_from={source!r})
point = load_resume_point(cfg, model_fingerprint(cfg, default_vocabulary(2000).words))
ledger = ledger_for(cfg, 3, 3, point, journal={journal!r})
ledger.record_asked_to_train([1, 2, 3])
print("booked", flush=True)
time.sleep(600)
"""


def _hold_in_another_process(source, journal):
    """A run in another process continuing `source` (journal at `journal`), having booked one round."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    script = _HOLDER.format(root=root, source=str(source), journal=str(journal))
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    if holder.stdout.readline().strip() != "booked":
        holder.kill()
        holder.wait()
        raise AssertionError("the other process did not book its round")
    return holder


def test_a_second_run_continuing_a_lineage_while_another_does_is_refused_until_that_one_dies(tmp_path):
    """Another process continues run-1 (as run-2) and books a round. A run resuming run-1 meanwhile
    is refused, naming both runs; once run-2's process is killed, the resume goes ahead and carries
    run-2's round (the OS released its lock)."""
    import subprocess
    import sys
    from pathlib import Path

    from task.privacy.ledger import JOURNAL

    from server_app.privacy import release_lineage

    cfg = _private_config()
    run_dir, _ = _journaled_run(tmp_path, cfg)
    release_lineage()  # run-1's process ends
    root = str(Path(__file__).resolve().parents[2])
    script = _HOLDER.format(root=root, source=str(run_dir), journal=str(tmp_path / "run-2" / JOURNAL))
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert holder.stdout.readline().strip() == "booked"
        with pytest.raises(ConfigError) as refused:
            _continued(tmp_path, cfg, run_dir, "run-3")
        message = str(refused.value)
        assert f"run {(tmp_path / 'run-2').resolve()} (pid {holder.pid}" in message
        assert f"privacy lock of {run_dir.resolve()}" in message and "continues it" in message
        assert f"This run ({(tmp_path / 'run-3').resolve()}) booked nothing" in message
        assert not (tmp_path / "run-3" / JOURNAL).exists()
    finally:
        holder.kill()
        holder.wait()
    assert _continued(tmp_path, cfg, run_dir, "run-3").most_participations() == 2


def test_a_copied_checkpoint_carries_the_charges_journaled_where_it_was_written(tmp_path):
    """Outside DP review, J1 (a): run-1 checkpoints round 1, books 3 more rounds and dies. Its
    checkpoint file, copied elsewhere, names run-1's directory: resuming the copy must charge the 4
    rounds of run-1's journal, as resuming the file in place does (before: 1, the checkpoint's)."""
    import shutil

    cfg = _private_config()
    run_dir, ledger = _journaled_run(tmp_path, cfg)
    for _ in range(3):
        ledger.check_next_round()
        ledger.record_asked_to_train([1, 2, 3])
    del ledger  # dies
    copy = tmp_path / "elsewhere" / "checkpoints"
    copy.mkdir(parents=True)
    shutil.copy(checkpoint_path(run_dir, 1), copy)
    copied = _continued(tmp_path, cfg, copy / "round-001.npz", "run-2")
    assert copied.most_participations() == 4
    copied.record_asked_to_train([1, 2, 3])  # ... and it books in run-1's journal too
    del copied
    assert _continued(tmp_path, cfg, checkpoint_path(run_dir, 1), "run-3").most_participations() == 5


def test_a_copied_run_directory_cannot_be_continued_while_another_process_continues_the_original(tmp_path):
    """Outside DP review, J1 (b): `cp -r run-1 run-1-copy`; another process continues run-1 and
    books a round. Continuing the copy meanwhile is refused, naming that run (its checkpoint names
    run-1, whose lock it takes); once that process is gone, the copy's continuation carries its
    round (run-1's journal) instead of booking beside it (before: allowed, each saw 1 + its own)."""
    import shutil

    from server_app.privacy import release_lineage
    from task.privacy.ledger import JOURNAL

    cfg = _private_config()
    run_dir, _ = _journaled_run(tmp_path, cfg)
    release_lineage()  # run-1's process ends
    copy = tmp_path / "run-1-copy"
    shutil.copytree(run_dir, copy)
    holder = _hold_in_another_process(run_dir, tmp_path / "run-2" / JOURNAL)
    try:
        with pytest.raises(ConfigError) as refused:
            _continued(tmp_path, cfg, copy, "run-3")
        message = str(refused.value)
        assert f"run {(tmp_path / 'run-2').resolve()} (pid {holder.pid}" in message
        assert f"privacy lock of {run_dir.resolve()}" in message
        assert f"This run ({(tmp_path / 'run-3').resolve()}) booked nothing" in message
        assert not (tmp_path / "run-3" / JOURNAL).exists()
    finally:
        holder.kill()
        holder.wait()
    assert _continued(tmp_path, cfg, copy, "run-3").most_participations() == 2


def test_a_live_ledger_keeps_its_lineage_locked_in_its_own_process_until_it_is_closed(tmp_path):
    """Outside DP review, J1-lock: within one process (a long-lived ServerApp), a second run
    continuing run-1 while run-1's ledger is live is refused, naming both (before: it took the
    lock over silently). Once run-1 ends (close(), or `with ledger:`), the continuation goes ahead."""
    import os
    import re

    from task.privacy.ledger import JOURNAL

    cfg = _private_config()
    run_dir, first = _journaled_run(tmp_path, cfg)
    with pytest.raises(ConfigError) as refused:
        _continued(tmp_path, cfg, run_dir, "run-2")
    message = str(refused.value)
    assert f"run {run_dir.resolve()} (pid {os.getpid()}" in message and "in this process" in message
    assert f"privacy lock of {run_dir.resolve()}" in message and "is still running" in message
    assert f"This run ({(tmp_path / 'run-2').resolve()}) booked nothing" in message
    assert not (tmp_path / "run-2" / JOURNAL).exists()
    first.close()
    with _continued(tmp_path, cfg, run_dir, "run-2") as second:
        assert second.most_participations() == 1
        with pytest.raises(ConfigError, match=rf"run {re.escape(str((tmp_path / 'run-2').resolve()))} \(pid "
                                              rf"{os.getpid()} .*in this process"):
            _continued(tmp_path, cfg, run_dir, "run-3")
    assert _continued(tmp_path, cfg, run_dir, "run-3").most_participations() == 1
