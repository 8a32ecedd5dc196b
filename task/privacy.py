"""How much privacy a run has spent: epsilon for every DP mechanism of the template.

All figures come from dp-accounting's RDP accountant (Flower's built-in accountant wraps the same
library but only covers fixed-clipping central DP without sampling amplification). The ledger is
plain data so it can be checkpointed and resumed: epsilon keeps growing across a resume.

What each figure means (delta is the run's dp-delta):
- central: user level (one device's whole text), add-or-remove-one device, no amplification by
  sampling - valid whoever the server picks. The number Flower's accountant reports.
- central-amplified: the same releases, credited for the server picking `sampled` of `population`
  devices uniformly without replacement (what FedAvg does). dp-accounting only analyses that
  sampling under replace-one adjacency, where one device's clipped update moves the sum by up to
  2 x clipping norm, so the noise multiplier is halved. Only reported when sampled < population.
- local: user level, for the device that released most often; each release is a Gaussian
  mechanism whose sensitivity is 2 x clipping norm (any two texts of the device).
- sample: DP-SGD on the device, add-or-remove-one sentence window, Poisson sampling of windows
  (what task/dpsgd.py really does), composed over every local step the device ran in every round;
  the device with the largest figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import dp_accounting
from dp_accounting import rdp

from task.config import DPConfig

DP_WEIGHT = "dp-weight"  # FedAvg's weighting key when any DP is on: every device sends 1

_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
_REPLACE = dp_accounting.NeighboringRelation.REPLACE_ONE


class PrivacyBudgetExceeded(RuntimeError):
    """The next release would spend more than dp-max-epsilon."""


def epsilon(event: dp_accounting.DpEvent, delta: float, replace_one: bool = False) -> float:
    accountant = rdp.RdpAccountant(neighboring_relation=_REPLACE if replace_one else _ADD_REMOVE)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def local_noise_multiplier(nominal_epsilon: float, delta: float) -> float:
    """Noise std / sensitivity of Flower's LocalDpMod (classic Gaussian-mechanism calibration)."""
    return math.sqrt(2 * math.log(1.25 / delta)) / nominal_epsilon


def dpsgd_event(rounds: list[tuple[float, int]], noise_multiplier: float) -> dp_accounting.DpEvent:
    """One device's DP-SGD: per round, `steps` Poisson-sampled steps at sampling rate q."""
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, gaussian), steps)
        for q, steps in rounds if steps > 0])


@dataclass
class PrivacyLedger:
    """Every private release of a run, and the epsilon it adds up to."""

    dp: DPConfig
    population: int  # devices the server samples from
    sampled: int  # devices asked to train per round
    central_noise: list[float] = field(default_factory=list)  # effective z of each central release
    local_releases: dict[str, int] = field(default_factory=dict)  # device -> updates it noised
    dpsgd_rounds: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # device -> (q, steps)

    # --- recording -----------------------------------------------------------------------------
    def record_central(self, replies: int) -> None:
        """A noised aggregate was released. Fewer replies than sampled means the noise, calibrated
        for `sampled` devices, covers a mean over fewer: the effective multiplier shrinks."""
        self.central_noise.append(self.dp.noise_multiplier * min(1.0, replies / self.sampled))

    def record_local(self, device: str) -> None:
        self.local_releases[device] = self.local_releases.get(device, 0) + 1

    def record_dpsgd(self, device: str, sampling_rate: float, steps: int) -> None:
        self.dpsgd_rounds.setdefault(device, []).append((float(sampling_rate), int(steps)))

    # --- figures -------------------------------------------------------------------------------
    def central_epsilon(self, extra_releases: int = 0) -> float | None:
        if not self.dp.central:
            return None
        noise = self.central_noise + [self.dp.noise_multiplier] * extra_releases
        if not noise:
            return 0.0
        events = [dp_accounting.GaussianDpEvent(z) for z in noise]
        return epsilon(dp_accounting.ComposedDpEvent(events), self.dp.delta)

    def central_amplified_epsilon(self) -> float | None:
        if not self.dp.central or self.sampled >= self.population or not self.central_noise:
            return None
        events = [dp_accounting.SampledWithoutReplacementDpEvent(
            self.population, self.sampled, dp_accounting.GaussianDpEvent(z / 2)) for z in self.central_noise]
        return epsilon(dp_accounting.ComposedDpEvent(events), self.dp.delta, replace_one=True)

    def local_epsilon(self, releases: int | None = None) -> float | None:
        """Worst device's epsilon after its releases (or after `releases` releases)."""
        if self.dp.mode != "local":
            return None
        count = max(self.local_releases.values(), default=0) if releases is None else releases
        if count == 0:
            return 0.0
        z = local_noise_multiplier(self.dp.local_epsilon, self.dp.delta)
        return epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), count), self.dp.delta)

    def sample_epsilon(self, projected: dict[str, list[tuple[float, int]]] | None = None) -> float | None:
        if not self.dp.sgd:
            return None
        rounds = projected if projected is not None else self.dpsgd_rounds
        return max((epsilon(dpsgd_event(r, self.dp.sgd_noise_multiplier), self.dp.delta)
                    for r in rounds.values()), default=0.0)

    def report(self) -> dict[str, float | int | str]:
        """Flat metrics for the per-round file and the summary (None figures are left out)."""
        figures = {
            "epsilon-central": self.central_epsilon(),
            "epsilon-central-amplified": self.central_amplified_epsilon(),
            "epsilon-local": self.local_epsilon(),
            "epsilon-local-per-release": self.local_epsilon(releases=1),
            "epsilon-sample": self.sample_epsilon(),
        }
        out: dict[str, float | int | str] = {k: v for k, v in figures.items() if v is not None}
        out.update({"delta": self.dp.delta, "dp-mode": self.dp.mode, "dp-sgd": int(self.dp.sgd),
                    "central-releases": len(self.central_noise), "population": self.population,
                    "sampled": self.sampled})
        if self.dp.mode != "none":
            out["clipping-norm"] = self.dp.clipping_norm
        if self.dp.central:
            out["noise-multiplier"] = self.dp.noise_multiplier
        if self.dp.sgd:
            out.update({"sgd-noise-multiplier": self.dp.sgd_noise_multiplier,
                        "sgd-clipping-norm": self.dp.sgd_clipping_norm})
        return out

    def assumptions(self) -> list[str]:
        """What the figures assume, in words (logged at the start of a run, kept in the summary)."""
        dp, lines = self.dp, []
        if dp.central:
            lines.append(f"user level, central ({dp.mode}): a device's whole update is clipped to L2 norm "
                         f"{dp.clipping_norm}{' (initially; adaptive)' if 'adaptive' in dp.mode else ''}, Gaussian noise "
                         f"z = {dp.noise_multiplier} x clipping norm on the sum; neighbouring = one device added or removed; "
                         f"population = {self.population} devices connected at the start, {self.sampled} sampled per round")
            if self.sampled < self.population:
                lines.append("amplified figure: FedAvg samples uniformly without replacement; replace-one adjacency")
        if dp.mode == "local":
            lines.append(f"user level, local: each device clips its update to {dp.clipping_norm} and adds Gaussian noise for "
                         f"epsilon {dp.local_epsilon} per release (sensitivity 2 x clipping norm); composed per device")
        if dp.sgd:
            lines.append(f"sample level, DP-SGD: each window's gradient clipped to {dp.sgd_clipping_norm}, noise "
                         f"z = {dp.sgd_noise_multiplier}; windows Poisson-sampled; every step of every round composed")
        if dp.max_epsilon > 0:
            lines.append(f"budget: the run stops before any figure would exceed epsilon {dp.max_epsilon}")
        return [f"{line}; delta = {dp.delta}" for line in lines]

    # --- budget --------------------------------------------------------------------------------
    def check_next_round(self, local_epochs: int) -> None:
        """Raise PrivacyBudgetExceeded if one more round could push a figure past dp-max-epsilon.

        The projection assumes the round releases with full participation. For DP-SGD each known
        device repeats its last round; a device not yet seen is bounded by full-batch steps (q = 1,
        one step per local epoch), which no Poisson-sampled epoch can exceed."""
        budget = self.dp.max_epsilon
        if budget <= 0:
            return
        projected = {
            "epsilon-central": self.central_epsilon(extra_releases=1),
            "epsilon-local": self.local_epsilon(releases=max(self.local_releases.values(), default=0) + 1),
            "epsilon-sample": self.sample_epsilon(self._projected_dpsgd(local_epochs)) if self.dp.sgd else None,
        }
        over = {k: v for k, v in projected.items() if v is not None and v > budget}
        if over:
            name, value = next(iter(over.items()))
            raise PrivacyBudgetExceeded(
                f"the next round would raise {name} to {value:.3f} > dp-max-epsilon = {budget} "
                f"(delta = {self.dp.delta}); stopping with the model of the last round")

    def _projected_dpsgd(self, local_epochs: int) -> dict[str, list[tuple[float, int]]]:
        projected = {d: r + [r[-1]] for d, r in self.dpsgd_rounds.items()}
        if len(projected) < self.population:
            projected["<unseen device>"] = [(1.0, local_epochs)]
        return projected

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "dp"}

    @classmethod
    def from_state(cls, dp: DPConfig, state: dict) -> PrivacyLedger:
        return cls(dp=dp, population=state["population"], sampled=state["sampled"],
                   central_noise=list(state["central_noise"]), local_releases=dict(state["local_releases"]),
                   dpsgd_rounds={d: [tuple(x) for x in r] for d, r in state["dpsgd_rounds"].items()})
