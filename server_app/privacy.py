"""The server's side of differential privacy: central DP around FedAvg, and the checks that keep
the noise's calibration honest.

- central-client-clip / central-server-clip: `CentralDP` below.
- central-adaptive-clip, central-ftrl and central-blt: subclasses of it in features/dp_mechanisms/
  (adaptive clipping; tree-aggregated noise; BLT-correlated noise), chosen in server_app/app.py.
- local: plain FedAvg here; each device noises its own update (features/dp_mechanisms/local_dp.py).
- dp.sgd: plain FedAvg here, or any of the above; the ledger accounts it from public settings.

Why not Flower 1.42's DifferentialPrivacy* wrappers (docs/privacy.md, known Flower defects):
they draw their noise from NumPy's global generator, which anyone can seed or replay; they divide
by the number of replies, so one device's reply or failure rescales the whole release; and the adaptive one moves
the clipping norm the wrong way, calibrates the noise to the norm after its update instead of the
one devices clipped to, and counts uncentred bits. `CentralDP` keeps their interface (the
`clipping_norm` config key Flower's client mods read) and follows McMahan et al. 2018 exactly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT, get_norm

from server_app.strategy import reply_order
from task.config import Config, ConfigError
from task.privacy import DP_WEIGHT
from task.privacy.ledger import JOURNAL, PrivacyLedger, selected_per_round
from task.privacy.mechanisms import secret_rng

log = logging.getLogger("flwr")


class CentralDP(Strategy):
    """User-level central DP: clip every update to C, sum, add N(0, (zC)^2) from a secret
    generator, divide by the number of devices sampled. Subclasses change the noise
    (`noise`) or what follows a release (`after_release`)."""

    MODES = ("central-client-clip", "central-server-clip")  # the dp.modes whose release this class makes

    def __init__(self, inner: FedAvg, cfg: Config, ledger: PrivacyLedger, rng: np.random.Generator | None = None,
                 device_norm=None):
        """`device_norm(clipping_norm, num_values)`: the norm devices clip to when the server cannot
        clip again (SecAgg+ rounds their updates: features/secagg/server.py); None: the clipping norm."""
        super().__init__()
        if cfg.dp.mode not in self.MODES:  # the ledger would account a release this class does not make
            raise ValueError(f"{type(self).__name__} makes the release of dp.mode {list(self.MODES)}, not "
                             f"{cfg.dp.mode!r} (server_app/app.py chooses the class for each mode)")
        self.inner, self.dp, self.ledger = inner, cfg.dp, ledger
        self.sampled = ledger.sampled  # the public denominator: the round's goal
        self.selected = ledger.selected  # devices asked (more than sampled with over-selection)
        self.rng = rng or secret_rng()
        self.clipping_norm = cfg.dp.clipping_norm
        self._device_norm = device_norm
        self.update_noise = cfg.dp.noise_multiplier  # on the sum, in units of the clipping norm
        self._current: ArrayRecord | None = None

    def summary(self) -> None:
        log.info("\t├──> Central DP (%s): noise multiplier %s on the sum, clipping norm %s, / %d sampled",
                 self.dp.mode, self.update_noise, self.clipping_norm, self.sampled)
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = arrays
        if self.dp.mode != "central-server-clip":
            config[KEY_CLIPPING_NORM] = self.device_clipping_norm(arrays)  # Flower's client mods clip to it
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if len(messages) != self.selected:
            raise RuntimeError(f"central DP: {len(messages)} devices asked to train, the noise is calibrated for "
                               f"{self.selected}")
        return messages

    def device_clipping_norm(self, arrays: ArrayRecord) -> float:
        """The norm devices clip to: the clipping norm, or below it where the server cannot clip again."""
        if not self._device_norm:
            return self.clipping_norm
        return self._device_norm(self.clipping_norm, sum(int(np.prod(a.shape)) for a in arrays.values()))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord, MetricRecord | None]:
        replies = sorted((r for r in replies if not r.has_error()), key=reply_order)  # zero if failed; sum order fixed
        current = self._current.to_numpy_ndarrays()
        total = [np.zeros_like(a, dtype=np.float64) for a in current]
        for reply in replies:
            update = [np.asarray(n, np.float64) - c for n, c in
                      zip(reply.content[self.inner.arrayrecord_key].to_numpy_ndarrays(), current, strict=True)]
            norm = get_norm(update)
            # Clipped again here in every mode: a device that did not clip (a bug, or malice)
            # cannot exceed the sensitivity the noise is calibrated to.
            scale = min(1.0, self.clipping_norm / norm) if norm > 0 else 1.0
            for t, u in zip(total, update):
                t += scale * u
        std = self.update_noise * self.clipping_norm
        noise = self.noise(current, std)
        new = [(c + (t + n) / self.sampled).astype(c.dtype) for c, t, n in zip(current, total, noise)]
        log.info("central DP: %d/%d updates clipped to %.4g, noise std %.4g on their sum, / %d sampled",
                 len(replies), self.sampled, self.clipping_norm, std, self.sampled)
        self.ledger.record_central(self.release_parts(), clipping_norm=self.clipping_norm)
        self.after_release(replies)
        # Only the metrics of FedAvg's aggregation: its average of the arrays is what this replaces.
        contents = [r.content for r in replies]
        metrics = self.inner.train_metrics_aggr_fn(contents, self.inner.weighted_by_key) if contents else None
        keys = self._current.keys()
        return ArrayRecord({k: Array(v) for k, v in zip(keys, new)}), metrics

    def noise(self, current: list[np.ndarray], std: float) -> list[np.ndarray]:
        """This round's noise on the sum: fresh Gaussian noise from the secret generator."""
        return [self.rng.normal(0.0, std, c.shape) for c in current]

    def release_parts(self) -> list[float]:
        """The noise multipliers of this release's Gaussian parts, for the ledger."""
        return [self.update_noise]

    def after_release(self, replies: list[Message]) -> None:
        """What the mechanism learns from a round once its release is made (adaptive clipping)."""

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.inner.aggregate_evaluate(server_round, replies)


def ledger_for(cfg: Config, population: int, sampled: int, resume, journal: Path | None = None) -> PrivacyLedger:
    """The run's privacy ledger: new, or continued from the run a run resumes (its checkpoint, or the
    journal furthest ahead in its lineage: charges of a round that crashed, or of another run that
    continued the same run, stay charged). `journal`: where this run's ledger writes itself ahead of
    every release (task/privacy/ledger.py); it is then also written into every run directory of the
    lineage, each of them locked first (`hold_lineage`) until the ledger is closed (the run's end)."""
    selected = selected_per_round(population, sampled, cfg.selection_factor)
    lineage = lineage_of(resume) if resume else []
    lock = None
    if journal is not None:  # before reading any journal for the state: no other run books in this lineage from now on
        lock = hold_lineage(Path(journal).parent, lineage)
    try:
        while lock is not None and resume:  # a journal read before the lock may have been ahead: lock what it named
            again = lineage_of(resume)
            if set(again) <= lock.covered:
                break
            lock.take(again)
            lineage = again
        ledger = (resumed_ledger(cfg, resumed_privacy(resume, lineage), population, sampled, selected) if resume
                  else new_ledger(cfg, population, sampled, selected))
        if journal is not None:
            ledger.keep_journal(journal, lineage)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None:
        ledger.hold(lock.release)
    for assumption in ledger.assumptions(cfg.model.seq_len):
        log.info("Privacy accounting: %s", assumption)
    return ledger


def lineage_of(resume) -> list[str]:
    """The run directories a resumed run continues, oldest first, its source last: every one the
    checkpoint's ledger records, the run that wrote it included (absolute, as recorded: a checkpoint
    or a whole run directory copied elsewhere still names the original), every one recorded by the
    journal found in any of those (runs that continued them since), and the source where it is now."""
    saved = resume.checkpoint.state.get("privacy") or {}
    source = str(Path(resume.source).resolve())
    found = dict.fromkeys(str(d) for d in saved.get("lineage", []))
    found.pop(source, None)
    todo = [*found, source]
    while todo:
        recorded = _journal_in(todo.pop(0))
        for directory in map(str, (recorded or {}).get("lineage", [])):
            if directory != source and directory not in found:
                found[directory] = None
                todo.append(directory)
    return [*found, source]


def _journal_in(run_dir: str) -> dict | None:
    path = Path(run_dir) / JOURNAL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot resume with DP: the privacy journal {path} is unreadable ({e}); it may hold "
                          "charges the checkpoint lacks") from e


def resumed_privacy(resume, lineage: list[str] | None = None) -> dict | None:
    """The ledger state a resumed run continues: the checkpoint's, or the journal furthest ahead
    among its lineage's run directories (`lineage`, default `lineage_of`) when one has booked more (a
    release, a round's devices or a discovery after the checkpoint was written, by the run itself or
    by any run that continued it or its ancestors: each writes its journal into all of them).
    Conservative: a resume from an older checkpoint, from a copy of it, or from a run another run
    already continued, keeps every later charge too."""
    saved = resume.checkpoint.state.get("privacy")
    chosen, where = saved, None
    for run_dir in lineage_of(resume) if lineage is None else lineage:
        journal = _journal_in(run_dir)
        if journal is None:
            continue
        if not chosen or int(journal.get("bookings", 0)) >= int(chosen.get("bookings", 0)):
            chosen, where = journal, Path(run_dir) / JOURNAL
    if where is not None and chosen != saved:
        log.warning("Resuming the privacy ledger from %s, which is ahead of the checkpoint of round %d in %s (%s "
                    "bookings against %s): what was booked after the checkpoint, by that run or by any run that "
                    "continued it, stays charged", where, resume.checkpoint.round, resume.source,
                    chosen.get("bookings"), (saved or {}).get("bookings", 0))
    return chosen


LOCK = "privacy-ledger.lock"  # in each run directory of a lineage while a run books in it
_held: dict[str, LineageLock] = {}  # lock file -> the live run's lock that holds it, in this process


class LineageLock:
    """The OS locks (flock on <run dir>/privacy-ledger.lock) one run holds on the directories of its
    lineage: two runs continuing one lineage at once would each book charges the other never sees,
    and the budget stop would not see their sum. A process that dies releases them, whatever killed
    it; `release()` does at the run's end (the ledger's close()). Each file names its holder (run,
    pid, host) for the error of a run refused. Within one process, a lock another live run holds is
    refused too, naming both runs (a long-lived ServerApp process may run several runs)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).resolve()
        self.covered: set[str] = set()  # directories considered (locked, or absent: nothing resumes from them)
        self.files: dict[str, object] = {}
        self.holder = {"run": str(self.run_dir), "pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def take(self, directories: Iterable[str | Path]) -> None:
        """Lock each of `directories` not locked yet, or raise ConfigError naming the run that holds it."""
        for directory in map(Path, directories):
            if str(directory) in self.covered:
                continue
            self.covered.add(str(directory))
            if directory != self.run_dir and not directory.is_dir():
                continue  # deleted or moved: no run resumes from it, and the journal skips it too
            directory.mkdir(parents=True, exist_ok=True)
            path = str(directory / LOCK)
            if path in self.files:
                continue
            other = _held.get(path)
            if other is not None:  # a run of this process that has not ended: its ledger is still live
                raise ConfigError(_held_by(json.dumps(other.holder), directory, self.run_dir, here=True))
            f = open(path, "a+")  # noqa: SIM115 (kept open: the lock lasts until release())
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                raise ConfigError(_held_by(holder, directory, self.run_dir)) from None
            _held[path] = self
            self.files[path] = f
            f.seek(0)
            f.truncate()
            f.write(json.dumps(self.holder) + "\n")
            f.flush()

    def release(self) -> None:
        while self.files:
            path, f = self.files.popitem()
            if _held.get(path) is self:
                del _held[path]
            f.close()  # closing the file releases its flock


def hold_lineage(run_dir: Path, ancestors: list[str]) -> LineageLock:
    """Lock `run_dir` and every directory of `ancestors` (the lineage it continues) until the lock
    is released (the run's end), or raise ConfigError naming the run that holds one (`LineageLock`)."""
    lock = LineageLock(run_dir)
    try:  # the source first: a refusal names the directory the operator resumes from when it can
        lock.take([*ancestors[-1:], *ancestors[:-1], lock.run_dir])
    except BaseException:
        lock.release()
        raise
    return lock


def release_lineage() -> None:
    """Release every lock this process holds, as its end would (tests that play several processes)."""
    for lock in list(dict.fromkeys(_held.values())):
        lock.release()


def _held_by(holder: str, directory: Path, run_dir: Path, here: bool = False) -> str:
    try:
        who = json.loads(holder)
        by, doing = (f"run {who['run']} (pid {who['pid']} on host {who['host']}, since {who['since']}"
                     f"{', in this process: its ledger is still live' if here else ''})",
                     "is still running" if who["run"] == str(directory) else "continues it")
    except (ValueError, KeyError, TypeError):
        by, doing = "another run", "continues it"
    return (f"cannot start this run: {by} holds the privacy lock of {directory} ({LOCK}): it {doing}, and two runs "
            f"booking privacy charges in one lineage at once would each miss the other's, so the budget stop would "
            f"not see their sum. This run ({run_dir}) booked nothing. Wait for that run to end or stop it (flwr "
            f"stop), then resume from the run that got furthest: its journal, and {directory}'s, hold the charges "
            f"of every run of the lineage")


def train_metrics_aggregator(cfg: Config, aggregate):
    """FedAvg's train-metrics aggregator, refusing unequal weights and dropping norm bits under DP."""
    if not cfg.dp.enabled:
        return aggregate

    def checked(records: list[RecordDict], weight_key: str) -> MetricRecord:
        require_equal_weights(records)
        return aggregate(without_norm_bits(records), weight_key)

    return checked


def resumed(strategy: CentralDP, resume=None) -> CentralDP:
    """A resumed run continues with the checkpoint's clipping norm (adaptive clipping moves it)."""
    restore_strategy_state(strategy, (resume.checkpoint.state.get("strategy") or {}) if resume else {})
    return strategy


def require_equal_weights(records: list[RecordDict]) -> None:
    """Under DP one device's influence on the average must be bounded: every weight is 1."""
    for record in records:
        for metrics in record.metric_records.values():
            if DP_WEIGHT in metrics and metrics[DP_WEIGHT] != 1:
                raise ValueError(f"a device reported {DP_WEIGHT} = {metrics[DP_WEIGHT]}; with DP on every "
                                 "device must count once in the average, or the noise no longer covers it")


def without_norm_bits(records: list[RecordDict]) -> list[RecordDict]:
    """Each device's exact norm bit is an input of the noised count, not something to store."""
    out = []
    for record in records:
        copy = RecordDict()
        for key, value in record.items():
            if isinstance(value, MetricRecord) and KEY_NORM_BIT in value:
                value = MetricRecord({k: v for k, v in value.items() if k != KEY_NORM_BIT})
            copy[key] = value
        out.append(copy)
    return out


def strategy_state(strategy: Strategy) -> dict:
    """What a resumed run needs to continue the strategy as it was: the adaptive clipping norm."""
    return {"clipping_norm": float(strategy.clipping_norm)} if isinstance(strategy, CentralDP) else {}


def restore_strategy_state(strategy: Strategy, state: dict) -> None:
    if "clipping_norm" in state and isinstance(strategy, CentralDP):
        strategy.clipping_norm = state["clipping_norm"]


def resumed_ledger(cfg: Config, saved: dict | None, population: int, sampled: int, selected: int) -> PrivacyLedger:
    """The saved ledger (`resumed_privacy`), so epsilon continues. The amplification figure assumes
    one population and sample size for the whole run: a resume must keep them."""
    if not saved:
        return new_ledger(cfg, population, sampled, selected)
    before = (saved["population"], saved["sampled"], saved.get("selected", saved["sampled"]))
    if before != (population, sampled, selected):
        raise ConfigError(f"cannot resume with DP: the run had {before[0]} devices, {before[1]} sampled (of "
                          f"{before[2]} asked) per round; now {population} are connected, {sampled} would be sampled "
                          f"(of {selected} asked)")
    try:
        return PrivacyLedger.from_state(cfg.dp, saved, cfg.local_epochs, cfg.max_local_steps, resumed=True)
    except ValueError as e:
        raise ConfigError(f"cannot resume with DP: {e}") from e


def new_ledger(cfg: Config, population: int, sampled: int, selected: int = 0) -> PrivacyLedger:
    return PrivacyLedger(cfg.dp, population=population, sampled=sampled, selected=selected, local_epochs=cfg.local_epochs,
                         max_local_steps=cfg.max_local_steps, rounds=cfg.num_server_rounds)
