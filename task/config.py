"""One typed, validated configuration object built from Flower's run config.

Every knob lives in `[tool.flwr.app.config]` of pyproject.toml and is read here exactly once. A
key is its field's name in kebab case; the keys of one feature form a group (Flower's dotted keys:
`dp.mode`, `secagg.num-shares`; `_known_keys` below lists them all). A bad value fails fast with
the key, the value and what is allowed, before any training starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from task import registry

# User-level privacy of a device's whole update (task/privacy/ledger.py accounts every mode;
# fixed clipping: server_app/privacy.py, client_app/privacy.py; the rest: features/dp_mechanisms/).
DP_MODES = ("none", "central-client-clip", "central-adaptive-clip", "central-server-clip", "central-ftrl", "central-blt",
            "local")
MECHANISM_MODES = ("central-adaptive-clip", "central-ftrl", "central-blt", "local")  # features/dp_mechanisms/
LR_SCHEDULES = ("constant", "cosine")  # the devices' learning rate across rounds (task/train.py)
# Named model shapes (model.preset): each replaces the shape keys left at their defaults. "dp-small"
# has a tenth of the weights: the server's noise norm grows with their square root (docs/privacy.md).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "": {},
    "dp-small": {"vocab_size": 2000, "embed_dim": 32, "num_heads": 2, "ffn_dim": 64},
}


# The message protocol both apps share: config keys of the server's messages, reply prefixes, codes.
ROUND_OFFSET = "round-offset"  # rounds done before a resume: devices count rounds globally
EVALUATE_FIRST = "evaluate-first"  # score the received model first (evaluate-in-train) ...
EVAL_PREFIX = "eval-"  # ... under this prefix, in the reply's one MetricRecord (Flower's clipping mods want one)
ROUND_GOAL = "round-goal"  # replies that close the round (over-selection)
VOCAB_ADDED = "vocab-added"  # the words discoveries appended to the base vocabulary, in order
QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE = "depth", "prefixes", "vote"  # a TrieHH query and its one vote
NOT_ELIGIBLE = 101  # error code of a reply that declines a round: counted apart from failures


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class ModelConfig:
    """The parts of the config that fix the model's shape (and so its weights' layout)."""

    architecture: str = "transformer"  # task/model.py: "transformer" or "lstm"
    vocab_size: int = 8000
    seq_len: int = 12
    embed_dim: int = 80
    num_heads: int = 4
    num_blocks: int = 1
    ffn_dim: int = 160
    dropout: float = 0.0


@dataclass(frozen=True)
class DPConfig:
    """Run-config group "dp.". `mode` protects a device's whole update (user level); `sgd` single
    windows of its text (sample level), with any mode."""

    mode: str = "none"
    noise_multiplier: float = 1.0  # central modes: noise std on the sum of updates (ftrl: per tree node) / clipping norm
    clipping_norm: float = 1.0  # L2 bound on one device's update (initial value when adaptive)
    delta: float = 1e-5  # must be < 1/population (user level) and < 1/examples (sample level)
    max_epsilon: float = 0.0  # 0 = no budget; else the run stops before a release would exceed it
    target_quantile: float = 0.5  # adaptive: fraction of updates left unclipped
    clip_lr: float = 0.2  # adaptive: geometric learning rate of the clipping norm
    clipped_count_stddev: float = 0.0  # adaptive: noise on the clipped count; 0 = sampled devices / 20
    local_epsilon: float = 8.0  # local: nominal epsilon of one release (Flower's LocalDpMod)
    sgd: bool = False  # DP-SGD on the device (tensorflow-privacy fast gradient clipping)
    sgd_noise_multiplier: float = 1.0
    sgd_clipping_norm: float = 1.0
    sgd_sampling_rate: float = 0.1  # public: a round has ceil(local-epochs / rate) steps (max-local-steps caps)
    report_train_metrics: bool = False  # true: also send training metrics and timings DP does NOT cover
    target_epsilon: float = 0.0  # > 0: the noise multiplier is planned so the run as configured spends this
    allow_no_dp_on_devices: bool = False  # true: a deployment (real SuperNodes) may run with mode = "none"

    @property
    def central(self) -> bool:
        return self.mode.startswith("central")

    @property
    def enabled(self) -> bool:
        return self.mode != "none" or self.sgd


def _switch(group: str, name: str, off: Any) -> property:
    """A value of an opt-in feature the core's hooks read: `off` when the feature is deleted."""
    return property(lambda self: getattr(self.feature(group), name, off), doc=f"{group}.{name} (off: {off!r})")


@dataclass(frozen=True)
class Config:
    # Federation
    num_server_rounds: int = 30
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    evaluate_in_train: bool = True  # devices score the model they receive in the train message: one message a round
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    round_timeout: float = 600.0
    server_optimizer: str = "fedavg"  # the server's strategy, by its name in server_app/strategy.py STRATEGIES
    server_learning_rate: float = 1.0  # fedavgm: step on the averaged update; fedadam: Adam's eta
    server_momentum: float = 0.0  # fedavgm only
    proximal_mu: float = 0.0  # fedprox: weight of the proximal term mu/2 ||w - w_global||^2 in local training
    # Local training on each device
    local_epochs: int = 1
    max_local_steps: int = 300  # a Pi-class device finishes 300 steps well inside round-timeout; 0 = no cap
    batch_size: int = 32
    learning_rate: float = 0.005
    learning_rate_schedule: str = "constant"  # or "cosine": to final-learning-rate by the last round
    final_learning_rate: float = 0.0005
    adam_epsilon: float = 1e-4  # Adam restarts every round: a larger one calms its first steps (docs/performance.md)
    client_optimizer: str = "adam"  # "adam" or "sgd" (plain SGD: no state to restart each round)
    # Model: "" = the shape keys below as given; a name in MODEL_PRESETS sets them
    model_preset: str = ""
    model: ModelConfig = ModelConfig()
    # Privacy
    dp: DPConfig = DPConfig()
    # Data
    data_source: str = "builtin"
    data_path: str = ""
    partitioner: str = "iid"
    sentences_per_device: int = 300
    max_sentences: int = 20_000  # a device reads at most this much of its text (streamed); 0 = all
    test_fraction: float = 0.2
    seed: int = 0
    # Server
    server_eval_devices: int = 20  # unseen synthetic users the server evaluates on (builtin only)
    out_dir: str = "~/fednextword-runs"
    keep_checkpoints: int = 5  # newest round checkpoints kept; 0 = all
    resume_from: str = ""  # a run directory (its newest usable checkpoint) or one checkpoint .npz
    # The opt-in features' settings, by run-config group: each feature's dataclass, from its folder
    # (features/<name>/config.py). from_run_config fills in every feature this copy has; a deleted
    # feature has none, so its keys are unknown and the switches below read "off".
    features: tuple[tuple[str, Any], ...] = dataclasses.field(default_factory=lambda: _feature_defaults())
    given_groups: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)  # groups in the run config

    # What the core's hooks (server_app/app.py, client_app/app.py, the records) read of the features.
    secure_aggregation = _switch("secagg", "enabled", False)  # the server receives only the sum (features/secagg/)
    vocab_discovery = _switch("discovery", "enabled", False)  # TrieHH new-word discovery (features/discovery/)
    new_word = _switch("discovery", "new_word", "")  # the built-in new-word scenario
    selection_factor = _switch("participation", "selection_factor", 1.0)  # over-selection; 1 = none
    stragglers = _switch("participation", "stragglers", 0.0)  # share of simulated slow devices
    transfer_dtype = _switch("transfer", "dtype", "float32")  # the encoding of models and updates
    audit_canaries = _switch("audit", "canaries", "")  # the privacy audit's canaries; "" = off
    init_from = _switch("warm-start", "init_from", "")  # warm start: the first model's weights
    int8 = _switch("int8", "enabled", False)  # also export the LiteRT int8 file

    def feature(self, group: str) -> Any:
        """An opt-in feature's settings (its dataclass in features/<name>/config.py), or None."""
        return dict(self.features).get(group)

    @property
    def participation(self) -> bool:
        """features/participation/: on while its group is in the run config (pyproject.toml has it)."""
        return "participation" in self.given_groups and self.feature("participation") is not None

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> Config:
        """Build and validate from Flower's `context.run_config` (kebab-case keys)."""
        known = _known_keys()
        unknown = sorted(set(run_config) - set(known))
        if unknown:
            raise ConfigError(f"unknown run-config key(s) {unknown}; known keys: {sorted(known)}")
        owners = {owner for owner, _ in known.values()}
        values: dict[type, dict[str, Any]] = {owner: {} for owner in owners}
        for key, value in run_config.items():
            owner, field = known[key]
            values[owner][field.name] = _coerce(key, value, field.type)
        groups = {module.GROUP: module.Settings(**values[module.Settings]) for module in feature_modules().values()}
        model = _apply_preset(values[cls].get("model_preset", ""), values[ModelConfig])
        config = cls(model=model, dp=DPConfig(**values[DPConfig]), features=tuple(sorted(groups.items())),
                     given_groups=frozenset(key.split(".")[0] for key in run_config if "." in key), **values[cls])
        config.validate()
        return config

    def to_run_config(self) -> dict[str, Any]:
        """The flat mapping of run-config keys `from_run_config` reads (for records and tests)."""
        parts = {Config: self, ModelConfig: self.model, DPConfig: self.dp,
                 **{type(settings): settings for _, settings in self.features}}
        return {key: getattr(parts[owner], field.name) for key, (owner, field) in _known_keys().items()
                if owner in parts and (self.participation or not key.startswith("participation."))}

    def with_run_config(self, changes: Mapping[str, Any]) -> Config:
        """This config with some run-config keys changed (e.g. {"secagg.enabled": True}), validated."""
        return Config.from_run_config({**self.to_run_config(), **changes})

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def scores_in_train(self) -> bool:
        """evaluate-in-train, off under DP: a training reply then carries the covered update and
        nothing else (task/releases.py); the held-out scores come in evaluate replies."""
        return self.evaluate_in_train and not self.dp.enabled

    @property
    def server_keeps_state(self) -> bool:
        """The server strategy keeps state across rounds (server_app/strategy.py `STATEFUL`): what
        central DP, resume and discovery refuse."""
        return self.server_optimizer in (registry.names(registry.STATEFUL_STRATEGIES) or ())

    @property
    def output_root(self) -> Path:
        return Path(self.out_dir).expanduser().resolve()

    def validate(self) -> None:
        m = self.model
        check("num-server-rounds", self.num_server_rounds, self.num_server_rounds >= 1, "an integer >= 1")
        check("fraction-train", self.fraction_train, 0 < self.fraction_train <= 1, "a number in (0, 1]")
        check("fraction-evaluate", self.fraction_evaluate, 0 <= self.fraction_evaluate <= 1, "a number in [0, 1]")
        for key in ("min-train-nodes", "min-evaluate-nodes", "min-available-nodes"):
            value = getattr(self, key.replace("-", "_"))
            check(key, value, value >= 1, "an integer >= 1")
        check("min-available-nodes", self.min_available_nodes,
               self.min_available_nodes >= max(self.min_train_nodes, self.min_evaluate_nodes),
               f">= min-train-nodes ({self.min_train_nodes}) and min-evaluate-nodes ({self.min_evaluate_nodes})")
        check("round-timeout", self.round_timeout, self.round_timeout > 0, "a number of seconds > 0")
        _check_registered("server-optimizer", self.server_optimizer, registry.STRATEGIES)
        check("server-learning-rate", self.server_learning_rate, self.server_learning_rate > 0, "a number > 0")
        check("server-momentum", self.server_momentum, 0 <= self.server_momentum < 1, "a number in [0, 1)")
        check("proximal-mu", self.proximal_mu, self.proximal_mu >= 0, "a number >= 0 (0 = plain local training)")
        check("proximal-mu", self.proximal_mu, self.proximal_mu == 0 or not self.dp.sgd,
              "0 with dp.sgd = true (DP-SGD clips the gradients of the next-word loss only)")
        check("local-epochs", self.local_epochs, self.local_epochs >= 1, "an integer >= 1")
        check("max-local-steps", self.max_local_steps, self.max_local_steps >= 0, "an integer >= 0 (0 = no cap)")
        check("batch-size", self.batch_size, self.batch_size >= 1, "an integer >= 1")
        check("learning-rate", self.learning_rate, 0 < self.learning_rate < 1, "a number in (0, 1)")
        check("client-optimizer", self.client_optimizer, self.client_optimizer in ("adam", "sgd"), '"adam" or "sgd"')
        check("adam-epsilon", self.adam_epsilon, 0 < self.adam_epsilon < 1, "a number in (0, 1)")
        check("learning-rate-schedule", self.learning_rate_schedule, self.learning_rate_schedule in LR_SCHEDULES,
               f"one of {list(LR_SCHEDULES)}")
        check("final-learning-rate", self.final_learning_rate, 0 < self.final_learning_rate <= self.learning_rate,
               f"a number in (0, learning-rate = {self.learning_rate:g}]")
        check("model.preset", self.model_preset, self.model_preset in MODEL_PRESETS, f"one of {list(MODEL_PRESETS)}")
        for field_name, value in MODEL_PRESETS[self.model_preset].items():
            key = "model." + field_name.replace("_", "-")
            check(key, getattr(m, field_name), getattr(m, field_name) == value,
                   f'{value} with model.preset = "{self.model_preset}"')
        _check_registered("model.architecture", m.architecture, registry.ARCHITECTURES)
        check("model.vocab-size", m.vocab_size, 100 <= m.vocab_size <= 20004,
               "an integer in [100, 20004] (base dictionary + 4 special tokens)")
        check("model.seq-len", m.seq_len, 2 <= m.seq_len <= 256, "an integer in [2, 256]")
        check("model.embed-dim", m.embed_dim, m.embed_dim >= 8, "an integer >= 8")
        check("model.num-heads", m.num_heads, m.num_heads >= 1 and m.embed_dim % m.num_heads == 0,
               f"an integer >= 1 that divides model.embed-dim ({m.embed_dim})")
        check("model.num-blocks", m.num_blocks, m.num_blocks >= 1, "an integer >= 1")
        check("model.ffn-dim", m.ffn_dim, m.ffn_dim >= 1, "an integer >= 1")
        check("model.dropout", m.dropout, 0 <= m.dropout < 1, "a number in [0, 1)")
        _check_registered("data.source", self.data_source, registry.SOURCES)
        check("data.path", self.data_path, self.data_source in ("builtin", "shakespeare") or bool(self.data_path),
               f'a path to your text (required when data.source="{self.data_source}")')
        _check_registered("data.partitioner", self.partitioner, registry.PARTITIONERS)
        check("data.max-sentences", self.max_sentences, self.max_sentences >= 0, "an integer >= 0 (0 = no cap)")
        check("data.sentences-per-device", self.sentences_per_device, self.sentences_per_device >= 10, "an integer >= 10")
        check("data.test-fraction", self.test_fraction, 0 < self.test_fraction < 1, "a number in (0, 1)")
        check("server-eval-devices", self.server_eval_devices, self.server_eval_devices >= 0, "an integer >= 0")
        check("out-dir", self.out_dir, bool(self.out_dir.strip()), "a non-empty path")
        check("keep-checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 0, "an integer >= 0 (0 = keep all)")
        self._validate_dp()
        # Each feature checks its own keys, and what it refuses of the others (features/<name>/config.py).
        for module in feature_modules().values():
            if self.feature(module.GROUP) is not None and hasattr(module, "validate"):
                module.validate(self)

    def _validate_dp(self) -> None:
        dp = self.dp
        check("dp.mode", dp.mode, dp.mode in DP_MODES, f"one of {list(DP_MODES)}")
        if dp.mode != "none":
            check("dp.clipping-norm", dp.clipping_norm, dp.clipping_norm > 0,
                   "a number > 0 (noise is only meaningful relative to a bound on each update)")
        if dp.central:
            check("dp.noise-multiplier", dp.noise_multiplier, dp.noise_multiplier > 0,
                   "a number > 0 (with no noise, clipping alone gives no privacy)")
        check("dp.delta", dp.delta, 0 < dp.delta < 1, "a number in (0, 1), and below 1/population")
        check("dp.max-epsilon", dp.max_epsilon, dp.max_epsilon >= 0, "a number >= 0 (0 = no budget)")
        check("dp.max-epsilon", dp.max_epsilon, dp.max_epsilon == 0 or dp.enabled or self.vocab_discovery,
               '0 unless a dp.mode other than "none", dp.sgd or discovery.enabled is on (there is no epsilon to budget)')
        check("dp.target-epsilon", dp.target_epsilon, dp.target_epsilon >= 0,
              "a number > 0, or 0 (off: dp.noise-multiplier as given)")
        if dp.target_epsilon > 0:  # ServerApp: server_app/privacy_plan.py plans the noise for it
            check("dp.target-epsilon", dp.target_epsilon, dp.central,
                  f'0 with dp.mode = "{dp.mode}": it plans the central modes\' dp.noise-multiplier ('
                  + ("local DP sets its noise from dp.local-epsilon" if dp.mode == "local" else
                     "no server noise to plan" + ("; DP-SGD's is dp.sgd-noise-multiplier" if dp.sgd else "")) + ")")
            check("dp.target-epsilon", dp.target_epsilon, not 0 < dp.max_epsilon < dp.target_epsilon,
                  f"at most dp.max-epsilon = {dp.max_epsilon!r} (the budget would stop the run before its last round)")
        if dp.mode in MECHANISM_MODES or dp.sgd:  # each DP mechanism beyond fixed clipping checks its own keys
            mechanisms = _feature_config("dp_mechanisms")
            key, value = ("dp.sgd", True) if dp.mode not in MECHANISM_MODES else ("dp.mode", dp.mode)
            check(key, value, mechanisms is not None, "a mechanism of this copy: features/dp_mechanisms/ is deleted "
                  f"(the core's modes: {[m for m in DP_MODES if m not in MECHANISM_MODES]}, dp.sgd = false)")
            mechanisms.validate(self)
        if dp.central:
            check("server-optimizer", self.server_optimizer, not self.server_keeps_state,
                   f'a strategy without server state with dp.mode="{dp.mode}" (the noise is calibrated to the '
                   "average of the clipped updates; a server optimiser applied before the noise would change "
                   "its sensitivity)")

    def validate_population(self, population: int, sampled: int) -> None:
        """Checks that need the number of devices, known only once they connect."""
        check("min-train-nodes", sampled, sampled <= population,
               f"at most the {population} connected devices (the round would sample {sampled})")
        for module in feature_modules().values():
            if self.feature(module.GROUP) is not None and hasattr(module, "validate_population"):
                module.validate_population(self, population, sampled)
        if self.dp.mode != "none":
            check("dp.delta", self.dp.delta, self.dp.delta < 1 / population,
                   f"below 1/population = 1/{population}; a larger delta allows leaking one device outright")
        if self.dp.mode in MECHANISM_MODES:
            _feature_config("dp_mechanisms").validate_population(self, population, sampled)


# Run-config keys are the field names in kebab case; a feature's keys form a group (Flower's dotted
# keys, `[tool.flwr.app.config]` subtables in pyproject.toml).
_GROUP = {ModelConfig: "model.", DPConfig: "dp."}
_GROUPED = {  # Config's own fields that belong to a group
    "model_preset": "model.preset",
    "data_source": "data.source", "data_path": "data.path", "partitioner": "data.partitioner",
    "sentences_per_device": "data.sentences-per-device", "max_sentences": "data.max-sentences",
    "test_fraction": "data.test-fraction",
}
_NESTED = ("model", "dp", "features", "given_groups")  # fields that are not run-config keys themselves


def _feature_config(folder: str) -> ModuleType | None:
    """features/<folder>/config.py, or None when the feature is deleted from this copy."""
    try:
        return importlib.import_module(f"features.{folder}.config")
    except ModuleNotFoundError as e:
        if e.name not in ("features", f"features.{folder}", f"features.{folder}.config"):
            raise
        return None


@lru_cache(maxsize=1)
def feature_modules() -> dict[str, ModuleType]:
    """The config module of every opt-in feature in this copy (features/<name>/config.py with a
    GROUP and its Settings), by folder. Found, not listed: deleting a feature's folder removes its
    keys (imported by name, the only way task/ reaches features/: their config is the core's)."""
    try:
        package = importlib.import_module("features")
    except ModuleNotFoundError:
        return {}
    modules = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = _feature_config(info.name)
        if module is not None and hasattr(module, "GROUP"):
            modules[info.name] = module
    return modules


def _feature_defaults() -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((module.GROUP, module.Settings()) for module in feature_modules().values()))


def _known_keys() -> dict[str, tuple[type, dataclasses.Field]]:
    keys = {}
    for owner in (Config, ModelConfig, DPConfig):
        for field in fields(owner):
            if field.name in _NESTED:
                continue
            key = _GROUPED.get(field.name) if owner is Config else None
            keys[key or _GROUP.get(owner, "") + field.name.replace("_", "-")] = (owner, field)
    for module in feature_modules().values():
        for field in fields(module.Settings):
            keys[f"{module.GROUP}.{field.name.replace('_', '-')}"] = (module.Settings, field)
    return keys


def _apply_preset(preset: str, given: dict[str, Any]) -> ModelConfig:
    """The model shape: the preset's values for the keys left at their defaults; a key set to
    something else conflicts (the run config cannot tell "left at default" from "set to default",
    so setting a key to its default value lets the preset win)."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"run-config key 'model.preset' = {preset!r} is invalid: expected one of {list(MODEL_PRESETS)}")
    defaults = ModelConfig()
    shape = dict(given)
    for name, value in MODEL_PRESETS[preset].items():
        chosen = shape.get(name, getattr(defaults, name))
        if chosen not in (value, getattr(defaults, name)):
            key = "model." + name.replace("_", "-")
            raise ConfigError(f"run-config key '{key}' = {chosen!r} conflicts with model.preset = {preset!r}, which sets "
                              f'it to {value}: leave {key} at its default ({getattr(defaults, name)}) or set model.preset = ""')
        shape[name] = value
    return ModelConfig(**shape)


def _coerce(key: str, value: Any, type_name: str) -> Any:
    # Run-config values come from TOML: ints may arrive for float fields, never the reverse.
    expected = {"int": int, "float": float, "str": str, "bool": bool}[type_name]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(f"run-config key '{key}' = {value!r}: expected {type_name}, got {type(value).__name__}")
    return value


def _check_registered(key: str, value: str, where: tuple[str, str]) -> None:
    """A name at an extension point: one of those its registry lists (task/registry.py)."""
    known = registry.names(where)
    if known is not None:  # a device lacks the server's strategies: the server checks that name
        check(key, value, value in known, f"one of {list(known)} (listed in {where[0]} {where[1]})")


def check(key: str, value: Any, ok: bool, allowed: str) -> None:
    """Refuse a run-config value, naming the key, the value and what is allowed."""
    if not ok:
        raise ConfigError(f"run-config key '{key}' = {value!r} is invalid: expected {allowed}")


