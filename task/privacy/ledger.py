"""How much privacy a run has spent, and the rules that keep that figure honest.

Every figure comes from dp-accounting's RDP accountant, applied to what the run actually released
(Flower 1.42's accountant covers only its fixed-clipping wrappers, which this template does not
use: docs/privacy.md). The ledger is plain data so it can be checkpointed and resumed, and it
writes itself ahead of every release (the journal, below).

Neighbouring relations. "Zero-out" (dp-accounting's REPLACE_SPECIAL): the two runs compared have
the same devices, and in one of them: one device's update replaced by zero (its votes empty); whether
it replied is not protected (the number of devices and their reply status are public). Its
contribution to every sum is nothing (its clipped update zero, and under adaptive clipping its
norm bit left out of the count), its discovery votes empty, while it replies as it did. The number
of devices (connected, sampled, asked) and each one's reply status (replied, declined, late,
failed and why) are published: a device whose text is none (or too little) does not reply with a
zero update, it fails ("too little text"), and that is in train_failed and failures, unprotected.
Add/remove-one device is NOT what the central figures bound: `sampled`, the denominator, is
derived from the population (with fraction-train = 1 they are equal), so removing a device would
rescale the release, and under fixed-size sampling an added device displaces a sampled one.
"Replace-one": one device's text replaced by any other text (it covers the zero-out pair too).

What each figure means (delta is the run's dp.delta):
- central: user level (one device's whole text), zero-out, no amplification by sampling - valid
  whoever the server picks. The noisy sum of clipped updates is divided by the number of devices
  *sampled* (public), never by the number that replied, so replacing one device's contribution
  by nothing moves the sum by at most the clipping norm and nothing else. Computed under
  REPLACE_SPECIAL (for a Gaussian event dp-accounting's RDP is the same under every relation: the
  multiplier is the noise in units of the sensitivity, which the relation sets, here C).
- central-amplified: the same releases, credited for the server picking `selected` devices
  uniformly without replacement, from a secret generator, out of those connected *that round*
  (recorded per release: a round with fewer connected devices gets less credit). dp-accounting
  analyses that sampling only under replace-one adjacency, where every sensitivity doubles: each
  noise multiplier is halved. Only reported when some round sampled fewer than were connected.
- over-selection (participation.selection-factor > 1): the server asks `selected` devices and keeps the first
  `sampled` updates (still dividing by `sampled`). A device whose contribution is nothing (or
  arrives at another time) lets another device's update into the first `sampled`, so the sum
  moves by up to 2 x the clipping norm: the central figure halves each multiplier too. Replace-one
  already doubles the sensitivity and the first-`sampled` rule does not raise it further (both
  sums share all but one update), so the amplified figure keeps its halved multipliers, with
  `selected` as the sample size.
- central-ftrl (DP-FTRL, Kairouz et al. 2021): user level, zero-out, no amplification and no
  assumption about how devices were picked; the noise is tree-aggregated over each tree's
  rounds, a device takes part at most once per tree (the server enforces it and starts a new tree
  when too few unused devices are left), and every tree is composed as if the worst device took
  part in each. dp-accounting's tree event is defined under REPLACE_SPECIAL.
- central-blt (BLT-DP-FTRL, Dvijotham, McMahan et al. 2024; McMahan et al. 2024): user level,
  zero-out, no amplification and no assumption about how devices were picked. The noise on round t's
  sum is (C^-1 z)_t for a buffered lower-triangular Toeplitz C (task/privacy/mechanisms.py), so the
  first t rounds are one Gaussian mechanism C_t x + z of L2 sensitivity clipping norm x sens(C_t; b)
  (Denisov et al. 2022 and Choquette-Choo et al. 2023: it holds for updates chosen adaptively, C
  being lower triangular), b the minimum separation: a device takes part at most once every b =
  floor(population / selected) rounds (the server enforces it; when too few devices are eligible,
  or after a resume, the noise restarts: a new segment). Segments compose as Gaussian mechanisms, each
  for the worst device. No sampling credit. Over-selection doubles the sensitivity, as above.
- local: user level, for the device asked to train most often, against the server too; each
  release is a Gaussian mechanism of sensitivity 2 x clipping norm (any two texts of the device),
  its noise calibrated so that one release's RDP epsilon is exactly dp.local-epsilon.
- discovery: user level, TrieHH's (epsilon, delta) for the query levels each vocabulary discovery
  ran (features/discovery/triehh.py, Theorem 1: add or remove one device), added up over
  discoveries. It bounds the zero-out pair too: TrieHH samples every connected device
  independently and a device whose votes are empty adds no vote, so a run with that device releases
  the trie with exactly the distribution of a run without it. It holds against those who see the
  trie and the vocabulary, not against the server, which sees each asked device's vote.
- with-discovery: the model's and discovery's figures together, zero-out (one device's update
  replaced by zero (its votes empty); whether it replied is not protected), epsilons and deltas added (basic
  composition): the central figure (DP-FTRL's, or the plain one; the amplified one is not used,
  which is conservative) plus discovery's. Not reported in local mode: local DP holds against the
  server and discovery only against those who see its output, so no one adversary gets their sum.
  Not reported without user-level DP on the model (dp.mode "none", DP-SGD or not): no finite
  user-level total exists.
- model: the one user-level figure of the model that privacy planning targets and the budget
  stop bounds: DP-FTRL's; for the other central modes the amplified one when the server sampled,
  else the plain central one; local's.
- sample: DP-SGD on the device, add-or-remove-one window (up to model.seq-len + 1 consecutive words of
  one sentence), Poisson sampling at the public rate dp.sgd-sampling-rate, every step of every
  round the device was asked to train. It covers what a device sends in training, and nothing
  of discovery: no window-level total with discovery is reported, because the server sees each
  vote (a prefix of one of the device's words) without noise, and discovery's figure is user level
  (it bounds one window only through group privacy, at 2 epsilon and (1 + e^epsilon) delta).

Delta: every figure is at dp.delta except discovery's and the total's, whose deltas add up over
discoveries. Every user-level delta stays below 1 / population (the bound dp.delta itself must
meet under a dp.mode, task/config.py: a larger delta allows releasing one device's text
outright); a discovery that would bring discovery's or the total's delta to it is refused, budget
or not. (The sample-level figure's bound is 1 / the device's windows.)

Journal (write-ahead): with `journal` set, the ledger writes its state atomically to that file
whenever it books something - devices asked to train (before their messages are sent), a
central release (before the aggregate is returned), a vocabulary discovery (its full plan, before
it runs; replaced by what it spent once it ran), a round taken back. A run that dies between a
release and its round's checkpoint leaves the release charged in the journal, and a resumed run
takes the journal when it is ahead of the checkpoint (server_app/privacy.py). It holds what a
checkpoint holds: the worst device's round count, never a count per device.

Lineage (outside DP review, J1): a run and every run resumed from it, directly or not, are one
lineage, and they share one budget. The state keeps the lineage's run directories (`lineage`,
oldest first, this run's own last, absolute), and the journal is written into every one of them
that still exists, not only into this run's: whichever run of the lineage an operator resumes from,
the journal there holds every charge booked by any run that continued it, also one that died before
its first checkpoint (it cannot be resumed itself). A resume reads and locks every directory the
checkpoint records (its own too: a checkpoint or run directory copied elsewhere still names the
original) and every one the journals found there record, plus the source where it is now, and takes
the journal furthest ahead (server_app/privacy.py). While a run books it holds a lock in each of
them, so two runs never continue one lineage at once; `close()` (or leaving `with ledger:`) releases
the locks when the run ends, and so does the ledger's garbage collection.

Randomness: central and local noise, the adaptive count's noise, discovery's and DP-SGD's
sampling draw from task.privacy.mechanisms.secret_rng (NumPy's PCG64 seeded with 128 bits of OS
entropy); BLT-DP-FTRL's per-round noise from secret_rng too (its buffers are
secret: in memory only, never checkpointed); DP-SGD's and DP-FTRL's noise from secret_tf_generator (TensorFlow Philox, all 192 bits
of state from OS entropy); the devices of a round from random.SystemRandom (OS entropy
directly). Never from the run's `seed` or a global generator that another library may seed.
"""

from __future__ import annotations

import json
import math
import weakref
from functools import lru_cache
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dp_accounting
from dp_accounting import rdp

from task.config import DPConfig
from task.privacy import PrivacyBudgetExceeded
from task.privacy.mechanisms import (BLT_BUFFERS, adaptive_noise, blt_sensitivities, dpsgd_steps,
                                     local_noise_multiplier, min_separation, optimal_blt)
from task.run.files import atomic_write

_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
_REPLACE = dp_accounting.NeighboringRelation.REPLACE_ONE
_ZERO_OUT = dp_accounting.NeighboringRelation.REPLACE_SPECIAL

JOURNAL = "privacy-ledger.json"  # the write-ahead journal's name in the run's directory
ZERO_OUT = ("one device's update replaced by zero (its votes empty); whether it replied is not protected (the number "
            "of devices and their reply status are public)")


def epsilon(event: dp_accounting.DpEvent, delta: float, replace_one: bool = False, zero_out: bool = False) -> float:
    relation = _ZERO_OUT if zero_out else _REPLACE if replace_one else _ADD_REMOVE
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def selected_per_round(population: int, sampled: int, selection_factor: float) -> int:
    """Devices asked per round: the round's goal `sampled` times participation.selection-factor,
    at most the population (the server, planning and the ledger all use this)."""
    return min(population, math.ceil(sampled * selection_factor))


def _composed(events: list[dp_accounting.DpEvent]) -> dp_accounting.DpEvent:
    """The same composition with runs of equal events self-composed: the RDP accountant then
    analyses each distinct release once instead of once per round (a 100-round plan or report of
    sampled releases took seconds per figure)."""
    runs: list[list] = []
    for event in events:
        if runs and runs[-1][0] == event:
            runs[-1][1] += 1
        else:
            runs.append([event, 1])
    return dp_accounting.ComposedDpEvent([e if n == 1 else dp_accounting.SelfComposedDpEvent(e, n) for e, n in runs])


@dataclass
class PrivacyLedger:
    """Every private release of a run, and the epsilon it adds up to."""

    dp: DPConfig
    population: int  # devices the server samples from
    sampled: int  # updates per round the noise is divided by (the round's goal)
    local_epochs: int = 1
    max_local_steps: int = 0
    # Each central release: the noise multipliers of its Gaussian parts (update; adaptive: count).
    central_releases: list[list[float]] = field(default_factory=list)
    # Each central release: how many devices its round sampled from (connected then).
    sampled_from: list[int] = field(default_factory=list)
    # Rounds each device was asked to train (its local-DP releases and DP-SGD rounds). Counted when
    # the request is sent: a reply that is lost may still have been seen. In memory only: saved per
    # device, two consecutive checkpoints would tell who was sampled in between.
    participations: dict[str, int] = field(default_factory=dict)
    # Rounds of the worst device before a resume. A resumed run may give the same device another
    # node id (simulation always does), so the worst device may be any: the counts add up.
    carried_participations: int = 0
    selected: int = 0  # devices asked per round (over-selection); 0 = sampled
    # central-ftrl: rounds of each tree so far (the last one is growing) and the devices asked
    # in the current tree, each at most once.
    trees: list[int] = field(default_factory=list)
    tree_members: set[str] = field(default_factory=set)
    # central-blt: the rounds the BLT is optimised for (0: not told; then the rounds released when the
    # parameters are first needed: a planner that drives the ledger through its rounds first), its
    # parameters {"theta", "omega", "separation", "rounds"} (public: functions of the run config and
    # the population), and the rounds of each noise segment (a new one after a resume, or when too few
    # devices are eligible). The round each device was last asked in the current segment stays in
    # memory only (per device, as tree_members).
    rounds: int = 0
    blt: dict = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)
    last_asked: dict[str, int] = field(default_factory=dict)
    # Vocabulary discoveries: (epsilon, delta) each spent (TrieHH, all its levels run).
    discoveries: list[list[float]] = field(default_factory=list)
    bookings: int = 0  # things booked so far, resumes included: tells a journal ahead of a checkpoint
    journal: Path | None = None  # the write-ahead journal (module doc); None: not written
    # The run directories of this ledger's lineage, oldest first, this run's own last (module doc):
    # the journal is written into each of them.
    lineage: list[str] = field(default_factory=list)

    _asked_from: int = 0  # devices the round being trained was sampled from
    last_clipping_norm: float = 0.0  # the norm the last central release was calibrated to
    _pending_discovery: list[float] | None = None  # a discovery's full plan while it runs
    _release: weakref.finalize | None = field(default=None, repr=False, compare=False)  # frees the locks: hold()

    def __post_init__(self) -> None:
        self.selected = self.selected or self.sampled
        if self.selected < self.sampled:
            raise ValueError(f"{self.selected} devices selected per round, fewer than the {self.sampled} sampled")
        if self.blt_mode and self.rounds and not self.blt:
            self.blt_parameters()  # optimised for the run's rounds and b now (a second or so; cached per process)

    @property
    def displacement(self) -> int:
        """How many times the clipping norm one device's contribution can move a central sum
        (zero-out: 1; with over-selection it can also let another update in: 2)."""
        return 2 if self.selected > self.sampled else 1

    # --- the journal ---------------------------------------------------------------------------
    def keep_journal(self, path: Path, ancestors: list[str] = ()) -> None:
        """Write the state to `path` now and after every booking, and into the directory of every
        run in `ancestors` (the runs this one continues, oldest first: module doc)."""
        self.journal = Path(path)
        own = str(self.journal.parent.resolve())
        before = dict.fromkeys(str(Path(d).resolve()) for d in ancestors)
        self.lineage = [d for d in before if d != own] + [own]
        self._write_journal()

    def hold(self, release: Callable[[], None]) -> None:
        """`release()` frees the locks this ledger books under (server_app/privacy.py): called once, by
        close() when the run ends, or at the latest when the ledger is garbage-collected."""
        self._release = weakref.finalize(self, release)

    def close(self) -> None:
        """The run ends: release its locks (the journal stays, with every charge)."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _booked(self) -> None:
        self.bookings += 1
        self._write_journal()

    def _write_journal(self) -> None:
        if self.journal is None:
            return
        state = self.state_dict()
        if self._pending_discovery:  # charged in full until it has run: a crash mid-way keeps it
            state["discoveries"] = state["discoveries"] + [self._pending_discovery]
        text = json.dumps(state)
        # The ancestors' journals first, this run's last: a crash in between leaves the lineage's
        # charges in the ancestors' (where the operator resumes from if this run has no checkpoint).
        for ancestor in self.lineage[:-1]:
            if Path(ancestor).is_dir():  # a run directory deleted or moved since: nothing resumes from it
                with atomic_write(Path(ancestor) / JOURNAL) as f:
                    f.write(text)
        with atomic_write(self.journal) as f:
            f.write(text)

    # --- recording -----------------------------------------------------------------------------
    def record_central(self, noise_multipliers: list[float], clipping_norm: float = 0.0) -> None:
        """`clipping_norm`: the norm this release's noise was calibrated to (adaptive clipping
        moves it every round; 0 = dp.clipping-norm). Journaled before the release leaves."""
        self.central_releases.append([float(z) for z in noise_multipliers])
        self._next_decided = False
        self.last_clipping_norm = float(clipping_norm or self.dp.clipping_norm)
        self.sampled_from.append(self._asked_from or self.population)
        if self.ftrl:
            self.trees[-1] += 1
        if self.blt_mode:
            if not self.segments:
                self.segments.append(0)
            self.segments[-1] += 1
        self._booked()

    def record_discovery(self, epsilon: float, delta: float) -> None:
        """What a discovery spent, once it ran (its full plan was journaled before: check_discovery)."""
        self.discoveries.append([float(epsilon), float(delta)])
        self._pending_discovery = None
        self._booked()

    def discovery_spent(self) -> tuple[float, float] | None:
        if not self.discoveries:
            return None
        return sum(e for e, _ in self.discoveries), sum(d for _, d in self.discoveries)

    def record_asked_to_train(self, devices: list, sampled_from: int = 0) -> None:
        """`sampled_from`: the devices connected when they were sampled (0 = the population).
        Journaled before the messages are sent (the strategy sends them after this returns)."""
        self._asked_from = sampled_from or self.population
        if self.ftrl:
            repeated = self.tree_members.intersection(map(str, devices))
            if repeated:  # the tree's accounting counts each device once
                raise RuntimeError(f"DP-FTRL: devices {sorted(repeated)} asked twice in one tree")
            self.tree_members.update(map(str, devices))
        self._next_decided = self.blt_mode or self.ftrl  # the next release grows the last tree / segment
        if self.blt_mode:
            if not self.segments:
                self.segments.append(0)
            row, b = self.segments[-1], self.separation
            too_soon = sorted(str(d) for d in devices if row - self.last_asked.get(str(d), -b) < b)
            if too_soon:  # the sensitivity assumes every device at most once every b rounds
                raise RuntimeError(f"BLT-DP-FTRL: devices {too_soon} asked again within the minimum separation of "
                                   f"{b} rounds")
            self.last_asked.update((str(d), row) for d in devices)
        for device in devices:
            self.participations[str(device)] = self.participations.get(str(device), 0) + 1
        self._booked()

    def record_declined(self, devices: list) -> None:
        """Devices that replied "not eligible" trained on nothing and sent nothing: their local-DP
        and DP-SGD releases of the round did not happen. (A late reply did: it is kept on the
        SuperLink, so it still counts.)"""
        taken_back = False
        for device in devices:
            if self.participations.get(str(device), 0) > 0:
                self.participations[str(device)] -= 1
                taken_back = True
        if taken_back:
            self._booked()

    @property
    def counts_devices(self) -> bool:
        """Does a figure depend on how often the worst device was asked (local DP, DP-SGD)?"""
        return self.dp.mode == "local" or self.dp.sgd

    @property
    def ftrl(self) -> bool:
        return self.dp.mode == "central-ftrl"

    @property
    def blt_mode(self) -> bool:
        return self.dp.mode == "central-blt"

    @property
    def no_sampling_credit(self) -> bool:
        """DP-FTRL and BLT-DP-FTRL take no credit for how devices were picked."""
        return self.ftrl or self.blt_mode

    @property
    def separation(self) -> int:
        """BLT-DP-FTRL's minimum separation b (task/privacy/mechanisms.py min_separation)."""
        return int(self.blt.get("separation") or min_separation(self.population, self.selected))

    def blt_parameters(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(theta, omega) of the run's BLT, optimised for its rounds and b once, then kept (state)."""
        if not self.blt:
            rounds = self.rounds or max(1, len(self.central_releases))
            theta, omega = optimal_blt(rounds, self.separation, BLT_BUFFERS)
            self.blt = {"theta": list(theta), "omega": list(omega), "separation": self.separation, "rounds": rounds}
        return tuple(self.blt["theta"]), tuple(self.blt["omega"])

    def _blt_state(self) -> dict:
        self.blt_parameters()
        return {"theta": list(self.blt["theta"]), "omega": list(self.blt["omega"]),
                "separation": int(self.blt["separation"]), "rounds": int(self.blt["rounds"])}

    def blt_sensitivity(self, rounds: int) -> float:
        """sens(C_t; b) of one segment of `rounds` rounds: the L2 sensitivity in clipping norms."""
        if rounds <= 0:
            return 0.0
        return _blt_sensitivity(*self.blt_parameters(), rounds, self.separation)

    def devices_for_next_round(self, connected: list) -> list:
        """DP-FTRL: the connected devices not yet in the current tree; a new tree starts when
        fewer are left than a round asks (or before the first round). BLT-DP-FTRL: the connected
        devices not asked in the last b - 1 rounds of the current segment; a new segment (the noise
        restarts) when fewer are left than a round asks (or before the first round). Other modes: all."""
        self._next_decided = self.blt_mode or self.ftrl  # the next release grows the last tree / segment
        if self.blt_mode:
            if not self.segments:
                self.segments.append(0)
            row, b = self.segments[-1], self.separation
            eligible = [d for d in connected if row - self.last_asked.get(str(d), -b) >= b]
            if len(eligible) < self.selected:
                self.segments.append(0)
                self.last_asked = {}
                eligible = list(connected)
            return eligible
        if not self.ftrl:
            return list(connected)
        fresh = [d for d in connected if str(d) not in self.tree_members]
        if not self.trees or len(fresh) < self.selected:
            self.trees.append(0)
            self.tree_members = set()
            fresh = list(connected)
        return fresh

    # --- figures -------------------------------------------------------------------------------
    def _central_parts(self) -> list[float]:
        """One release's multipliers under the current config (used for projections)."""
        if self.dp.mode == "central-adaptive-clip":
            update_z, count_std = adaptive_noise(self.dp, self.sampled)
            return [update_z, 2 * count_std]
        return [self.dp.noise_multiplier]

    def central_event(self, extra_releases: int = 0) -> dp_accounting.DpEvent:
        if self.ftrl:
            return self._tree_event(self.trees)
        if self.blt_mode:
            return self._blt_event(self.segments)
        releases = self.central_releases + [self._central_parts()] * extra_releases
        return _composed([dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z / self.displacement)
                                                         for z in parts]) for parts in releases])

    def central_epsilon(self, extra_releases: int = 0) -> float | None:
        """The central figure, zero-out (module doc), without amplification."""
        if not self.dp.central:
            return None
        if not self.central_releases and not extra_releases:
            return 0.0
        decided = getattr(self, "_next_decided", False)  # devices_for_next_round chose the next round's tree / segment
        if self.ftrl:
            # The next rounds may grow the current tree or start a new one (which devices are
            # connected then decides): the larger figure, unless that was decided for the next one.
            grown = self.trees[:-1] + [self.trees[-1] + extra_releases] if self.trees else [extra_releases]
            candidates = ([grown] if decided and extra_releases == 1 else
                          [self.trees + [extra_releases], grown] if extra_releases else [self.trees])
            return max(epsilon(self._tree_event(trees), self.dp.delta, zero_out=True) for trees in candidates)
        if self.blt_mode:
            # Likewise: the current segment grows, or a new one starts (too few eligible devices).
            segments = self.segments or [0]
            grown = segments[:-1] + [segments[-1] + extra_releases]
            candidates = ([grown] if decided and extra_releases == 1 else
                          [grown, segments + [extra_releases]] if extra_releases else [segments])
            return max(epsilon(self._blt_event(s), self.dp.delta, zero_out=True) for s in candidates)
        return epsilon(self.central_event(extra_releases), self.dp.delta, zero_out=True)

    def _tree_event(self, trees: list[int]) -> dp_accounting.DpEvent:
        """Each tree is one of dp-accounting's single-epoch tree events (every device at most once
        in it); the trees compose, since one device may be in each."""
        z = self.dp.noise_multiplier / self.displacement
        return dp_accounting.ComposedDpEvent([dp_accounting.SingleEpochTreeAggregationDpEvent(z, steps)
                                              for steps in trees if steps > 0])

    def _blt_event(self, segments: list[int]) -> dp_accounting.DpEvent:
        """Each segment is one Gaussian mechanism C_t x + z (t its rounds) of sensitivity
        sens(C_t; b) clipping norms, noise z x clipping norm; the segments compose (one device may
        take part in each). Zero-out; over-selection doubles the sensitivity (displacement)."""
        z = self.dp.noise_multiplier / self.displacement
        return dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z / self.blt_sensitivity(t))
                                              for t in segments if t > 0])

    def central_amplified_epsilon(self, extra_from: int = 0) -> float | None:
        """Replace-one, the server's sample credited (module doc). `extra_from`: project one more
        release, sampled from that many devices."""
        releases = list(zip(self.central_releases, self.sampled_from))
        if extra_from:
            releases.append((self._central_parts(), extra_from))
        if not self.dp.central or self.no_sampling_credit or not any(n > self.selected for _, n in releases):
            return None  # DP-FTRL and BLT-DP-FTRL take no credit for how devices were picked

        def event(parts: list[float], n: int) -> dp_accounting.DpEvent:
            gaussians = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z / 2) for z in parts])
            return dp_accounting.SampledWithoutReplacementDpEvent(n, self.selected, gaussians) if n > self.selected \
                else gaussians  # everyone connected was asked: no credit

        return epsilon(_composed([event(parts, n) for parts, n in releases]), self.dp.delta, replace_one=True)

    def model_epsilon(self, extra_from: int = 0) -> float | None:
        """The model's user-level figure that planning targets and the budget bounds (module doc);
        `extra_from`: after one more round sampled from that many devices."""
        if self.dp.central:
            amplified = None if self.no_sampling_credit else self.central_amplified_epsilon(extra_from)
            return amplified if amplified is not None else self.central_epsilon(extra_releases=1 if extra_from else 0)
        if self.dp.mode == "local":
            return self.local_epsilon(releases=self.most_participations() + 1 if extra_from else None)
        return None

    def with_discovery(self, extra: tuple[float, float] | None = None,
                       extra_from: int = 0) -> tuple[float, float] | None:
        """(epsilon, delta) of the model and discovery together, zero-out: one device's update
        replaced by zero, its votes empty (module doc); None without discoveries, in local mode, or without
        user-level DP on the model."""
        spent = [tuple(d) for d in self.discoveries] + ([extra] if extra else [])
        if not spent or not self.dp.central:
            return None
        model = self.central_epsilon(extra_releases=1 if extra_from else 0)
        return model + sum(e for e, _ in spent), self.dp.delta + sum(d for _, d in spent)

    def most_participations(self) -> int:
        return self.carried_participations + max(self.participations.values(), default=0)

    def local_epsilon(self, releases: int | None = None) -> float | None:
        """Worst device's epsilon after its releases (or after `releases` releases)."""
        if self.dp.mode != "local":
            return None
        count = self.most_participations() if releases is None else releases
        if count == 0:
            return 0.0
        z = local_noise_multiplier(self.dp.local_epsilon, self.dp.delta)
        return epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), count), self.dp.delta)

    def sample_event(self, rounds: int) -> dp_accounting.DpEvent:
        """One device's DP-SGD over `rounds` rounds: every step Poisson-samples its windows."""
        steps = rounds * dpsgd_steps(self.local_epochs, self.dp.sgd_sampling_rate, self.max_local_steps)
        return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            self.dp.sgd_sampling_rate, dp_accounting.GaussianDpEvent(self.dp.sgd_noise_multiplier)), steps)

    def sample_epsilon(self, rounds: int | None = None) -> float | None:
        """Worst device's DP-SGD epsilon after its rounds (or after `rounds` rounds): one window,
        add or remove, what the device sends in training; discovery is not in it (module doc)."""
        if not self.dp.sgd:
            return None
        count = self.most_participations() if rounds is None else rounds
        return epsilon(self.sample_event(count), self.dp.delta) if count else 0.0

    def report(self) -> dict[str, float | int | str]:
        """Flat metrics for the per-round file and the summary (None figures are left out).
        Relations (module doc): epsilon-central and epsilon-with-discovery zero-out (ZERO_OUT),
        epsilon-central-amplified replace-one,
        epsilon-local any two texts of one device, epsilon-discovery add/remove (and so zero-out),
        epsilon-sample add/remove one window of what a device sends in training."""
        figures = {
            "epsilon-central": self.central_epsilon(),
            "epsilon-central-amplified": self.central_amplified_epsilon(),
            "epsilon-local": self.local_epsilon(),
            "epsilon-local-per-release": self.local_epsilon(releases=1),
            "epsilon-sample": self.sample_epsilon(),
        }
        out: dict[str, float | int | str] = {k: v for k, v in figures.items() if v is not None}
        spent = self.discovery_spent()
        if spent:
            out.update({"epsilon-discovery": spent[0], "delta-discovery": spent[1], "discoveries": len(self.discoveries)})
            total = self.with_discovery()
            if total:
                out.update({"epsilon-with-discovery": total[0], "delta-with-discovery": total[1]})
        out.update({"delta": self.dp.delta, "dp-mode": self.dp.mode, "dp-sgd": int(self.dp.sgd),
                    "central-releases": len(self.central_releases), "population": self.population,
                    "sampled": self.sampled, "selected": self.selected})
        if self.counts_devices:  # elsewhere it would tell how the secret samples overlapped (review N-1)
            out["most-rounds-per-device"] = self.most_participations()
        if self.sampled_from:  # devices connected when each round sampled: its amplification
            out.update({"sampled-from": self.sampled_from[-1], "sampled-from-fewest": min(self.sampled_from)})
        if self.dp.mode != "none":  # the norm the last release was calibrated to (before any: the first one's)
            out["clipping-norm"] = self.last_clipping_norm or self.dp.clipping_norm
        if self.dp.central:
            out["noise-multiplier"] = self.dp.noise_multiplier
        if self.ftrl:
            out.update({"trees": len(self.trees), "rounds-in-tree": self.trees[-1] if self.trees else 0})
        if self.blt_mode:
            out.update({"min-separation": self.separation, "blt-buffers": len(self.blt_parameters()[0]),
                        "blt-segments": len(self.segments), "rounds-in-segment": self.segments[-1] if self.segments
                        else 0, "blt-sensitivity": math.sqrt(sum(self.blt_sensitivity(t) ** 2 for t in self.segments))})
        if self.dp.sgd:
            out.update({"sgd-noise-multiplier": self.dp.sgd_noise_multiplier,
                        "sgd-clipping-norm": self.dp.sgd_clipping_norm,
                        "sgd-sampling-rate": self.dp.sgd_sampling_rate})
        return out

    def assumptions(self, seq_len: int) -> list[str]:
        """What the figures assume, in words (logged at the start of a run, kept in the summary)."""
        dp, lines = self.dp, []
        if dp.central:
            noise = f"Gaussian noise z = {dp.noise_multiplier} x clipping norm on the sum"
            bit = ""
            if dp.mode == "central-adaptive-clip":
                update_z, count_std = adaptive_noise(dp, self.sampled)
                noise = (f"Gaussian noise {update_z:.4g} x clipping norm on the sum and std {count_std:g} on the "
                         f"centred unclipped count, together z = {dp.noise_multiplier} (Andrew et al. 2021)")
                bit = " and its norm bit left out of the count"
            if self.blt_mode:
                theta, omega = self.blt_parameters()
                noise = (f"BLT-correlated Gaussian noise (BLT-DP-FTRL, Dvijotham, McMahan et al. 2024): z = "
                         f"{dp.noise_multiplier} x clipping norm per round, correlated through C^-1 of a buffered "
                         f"Toeplitz C with {len(theta)} buffers (decays {', '.join(f'{t:.4g}' for t in theta)}; "
                         f"weights {', '.join(f'{w:.4g}' for w in omega)}; optimised for {self.blt['rounds']} "
                         f"rounds)")
            if self.ftrl:
                noise = (f"tree-aggregated Gaussian noise, z = {dp.noise_multiplier} x clipping norm per tree node, "
                         "on the running sum of each tree's rounds (DP-FTRL, Kairouz et al. 2021)")
            lines.append(f"user level, central ({dp.mode}): a device's whole update is clipped to L2 norm "
                         f"{dp.clipping_norm}{' (initially; adaptive)' if 'adaptive' in dp.mode else ''}, {noise}, "
                         f"divided by the {self.sampled} devices sampled (not by those that replied); neighbouring "
                         f"= zero-out (dp-accounting's REPLACE_SPECIAL): one device's update replaced by zero{bit} "
                         f"(its votes empty); whether it replied is not protected (the number of devices and their "
                         f"reply status are public: a device without text fails, and that is published); not "
                         f"add/remove one device: the number of devices is public (population = {self.population} "
                         f"devices connected at the start, {self.sampled} sampled per round, derived from it)")
            if self.selected > self.sampled:
                lines.append(f"over-selection: {self.selected} devices asked per round, the first {self.sampled} "
                             "updates kept; a device's contribution can displace another's update, so the central "
                             "figure counts each noise multiplier at half (sensitivity 2 x clipping norm)")
            if self.ftrl:
                lines.append("DP-FTRL: no credit for sampling; each device takes part at most once per tree (enforced by "
                             "the server, which starts a new tree when too few unused devices are connected; a resume "
                             "starts one too); every tree counts for the worst device; zero-out, as above (dp-accounting's "
                             "tree event is defined under REPLACE_SPECIAL)")
            elif self.blt_mode:
                lines.append(f"BLT-DP-FTRL: no credit for sampling; minimum separation b = {self.separation} "
                             f"(floor(population / devices asked per round)): each device takes part at most once "
                             f"every {self.separation} rounds (enforced by the server; when too few eligible devices "
                             "are connected, and after a resume, the noise restarts: a new segment); each segment "
                             "is one Gaussian mechanism of sensitivity clipping norm x sens(C; b), the max over the "
                             "participation patterns b allows of the norm of the sum of C's columns (the pattern "
                             "0, b, 2b, ...); the segments compose for the worst device; zero-out, as above")
            elif self.selected < self.population:
                lines.append(f"amplified figure: {self.selected} devices asked per round, sampled uniformly without "
                             "replacement by a secret generator out of the devices connected that round (counted per "
                             "round: fewer connected, less credit); replace-one adjacency (one device's text replaced "
                             "by any other); the unit is one device key (one person only if the deployment gives each "
                             "person one key)")
        if dp.mode == "local":
            lines.append(f"user level, local: each device clips its update to {dp.clipping_norm} and adds Gaussian "
                         f"noise {local_noise_multiplier(dp.local_epsilon, dp.delta):.4g} x 2 x clipping norm "
                         f"(RDP epsilon {dp.local_epsilon} per release, any two texts of the device); composed per "
                         "device; it holds against the server too, so no total with vocabulary discovery (which "
                         "holds only against those who see its output) is reported")
        if dp.sgd:
            lines.append(
                f"sample level, DP-SGD: the unit is one window of up to {seq_len + 1} consecutive words of "
                f"a sentence (longer sentences span several windows), its gradient clipped to "
                f"{dp.sgd_clipping_norm}, noise z = {dp.sgd_noise_multiplier}; windows Poisson-sampled at "
                f"rate {dp.sgd_sampling_rate}, "
                f"{dpsgd_steps(self.local_epochs, dp.sgd_sampling_rate, self.max_local_steps)} "
                f"steps per round; every round a device was asked to train composed; add or remove one window "
                f"of what a device sends in training. Vocabulary discovery is not in it and no window-level total "
                f"with it is reported: the server sees each discovery vote (a prefix of one of the device's words) "
                f"without noise, and discovery's figure is user level (it bounds one window only through group "
                f"privacy, at 2 x its epsilon)"
            )
        if dp.enabled:
            lines.append(
                "outside the guarantee: evaluation metrics (loss, accuracy and word counts on each device's "
                "held-out text, its last sentences: their number follows the size of the device's whole text), "
                "which devices replied, declined, were late or failed (by category), when each reply arrived "
                "and how long its device computed (Flower reports it), and, with dp.report-train-metrics, "
                "training metrics and what a round cost the device (task/releases.py lists every value)"
            )
        lines.append(f"delta bound: every user-level delta stays below 1/population = 1/{self.population} "
                     f"(discovery's and the total's deltas add up over discoveries; a discovery that would reach it "
                     f"is refused, budget or not)")
        if dp.max_epsilon > 0:
            lines.append(f"budget: the run stops before the model's user-level figure (the one privacy planning "
                         f"targets: DP-FTRL's, else the amplified one when the server samples, else the plain central "
                         f"one; local's), the sample-level figure or the total with discovery would exceed epsilon "
                         f"{dp.max_epsilon}; each vocabulary discovery is checked before it runs")
        return [f"{line}; delta = {dp.delta}" for line in lines]

    # --- budget --------------------------------------------------------------------------------
    def check_next_round(self, sampled_from: int = 0) -> None:
        """Raise PrivacyBudgetExceeded if one more round, sampled from `sampled_from` connected
        devices (0 = the population), could push a budgeted figure past dp.max-epsilon: the model's
        (the one planning targets), the sample-level one and the total with discovery. Exact, not a
        guess: every device runs the same public DP-SGD plan, so the worst device after the next
        round is the one asked most often so far, asked once more. (A round adds no delta.)"""
        if self.dp.max_epsilon <= 0:  # no budget: nothing to project (the figures cost an accountant each)
            return
        extra_from = sampled_from or self.population
        total = self.with_discovery(extra_from=extra_from)
        self._check({"the model's user-level epsilon": self.model_epsilon(extra_from=extra_from),
                     "epsilon-sample": self.sample_epsilon(rounds=self.most_participations() + 1),
                     "epsilon-with-discovery": total[0] if total else None}, "the next round")

    def check_discovery(self, epsilon_: float, delta: float) -> None:
        """Raise PrivacyBudgetExceeded if a discovery spending (epsilon_, delta) could push the
        discovery figure or the total with discovery past dp.max-epsilon, or their delta to
        1/population (budget or not). Else the discovery is booked in full in the journal before
        it runs (record_discovery then books what it spent)."""
        spent = self.discovery_spent() or (0.0, 0.0)
        total = self.with_discovery(extra=(epsilon_, delta))
        what = "the next vocabulary discovery"
        bound = 1 / self.population
        deltas = {"delta-discovery": spent[1] + delta, "delta-with-discovery": total[1] if total else None}
        over = {k: v for k, v in deltas.items() if v is not None and v >= bound}
        if over:
            name, value = next(iter(over.items()))
            raise PrivacyBudgetExceeded(f"{what} would raise {name} to {value:.3g} >= 1/population = "
                                        f"1/{self.population}; stopping with the model of the last round")
        self._check({"epsilon-discovery": spent[0] + epsilon_,
                     "epsilon-with-discovery": total[0] if total else None}, what)
        self._pending_discovery = [float(epsilon_), float(delta)]
        self._booked()

    def _check(self, projected: dict[str, float | None], what: str) -> None:
        budget = self.dp.max_epsilon
        if budget <= 0:
            return
        over = {k: v for k, v in projected.items() if v is not None and v > budget}
        if over:
            name, value = next(iter(over.items()))
            raise PrivacyBudgetExceeded(
                f"{what} would raise {name} to {value:.3f} > dp.max-epsilon = {budget} "
                f"(delta = {self.dp.delta}); stopping with the model of the last round"
            )

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "population": self.population,
            "sampled": self.sampled,
            "selected": self.selected,
            "central_releases": self.central_releases,
            "sampled_from": self.sampled_from,
            # the worst device's rounds only: per-device counts would tell who each round sampled; and
            # only where a figure needs it (local DP, DP-SGD): elsewhere it tells how samples overlapped
            "carried_participations": self.most_participations() if self.counts_devices else 0,
            "trees": self.trees,
            **({"blt": self._blt_state(), "segments": list(self.segments)} if self.blt_mode else {}),
            "discoveries": self.discoveries,
            "bookings": self.bookings,
            "lineage": list(self.lineage),  # run directories (server paths), no device in them
        }

    @classmethod
    def from_state(
        cls, dp: DPConfig, state: dict, local_epochs: int = 1, max_local_steps: int = 0, resumed: bool = False
    ) -> PrivacyLedger:
        """`resumed`: a new run continues this ledger (node ids may change, and DP-FTRL's tree
        members are not saved, so it starts a new tree)."""
        if dp.mode == "central-blt" and state.get("central_releases") and not state.get("blt"):
            raise ValueError("the checkpoint's ledger has central releases but no BLT parameters: it was not made by "
                             'dp.mode = "central-blt"')
        if "central_releases" not in state:
            raise ValueError(
                "the checkpoint's privacy ledger is from an older version of this template, whose "
                "noise was not secret; start a new run"
            )
        releases = [list(r) for r in state["central_releases"]]
        older = max(dict(state.get("participations", {})).values(), default=0)  # checkpoints before sampled_from
        ledger = cls(
            dp=dp,
            population=state["population"],
            sampled=state["sampled"],
            selected=int(state.get("selected", state["sampled"])),
            local_epochs=local_epochs,
            max_local_steps=max_local_steps,
            central_releases=releases,
            sampled_from=[int(n) for n in state.get("sampled_from", [state["population"]] * len(releases))],
            carried_participations=int(state.get("carried_participations", 0)) + older,
            trees=[int(t) for t in state.get("trees", [])],
            blt=dict(state.get("blt", {})),
            rounds=int(state.get("blt", {}).get("rounds", 0)),
            segments=[int(t) for t in state.get("segments", [])],
            discoveries=[list(d) for d in state.get("discoveries", [])],
            bookings=int(state.get("bookings", 0)),
            lineage=[str(d) for d in state.get("lineage", [])],
        )
        if resumed:
            if ledger.trees:  # node ids change: the resumed run starts a new tree, composed with the old ones
                ledger.trees.append(0)
            if ledger.segments and ledger.segments[-1]:  # and a new BLT segment: the noise restarts (its buffers
                ledger.segments.append(0)  # were never saved), composed with the earlier segments
        return ledger


@lru_cache(maxsize=4096)
def _blt_sensitivity(theta: tuple[float, ...], omega: tuple[float, ...], rounds: int, separation: int) -> float:
    return float(blt_sensitivities(theta, omega, rounds, separation)[-1])
