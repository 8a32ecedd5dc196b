"""The release boundary: every value that leaves a device, and every value the server publishes,
with what it is a function of and how DP treats it. One inventory, read by the ClientApp (its
`boundary_mod` refuses to send a value missing here: client_app/boundary.py) and by the tests
that derive their checks from it (tests/unit/test_release_boundary.py,
tests/integration/test_published_boundary.py). A feature that sends or publishes a new value
declares it here first, or its replies fail closed.

Under DP (any dp.mode but "none") every value is one of:
- COVERED: a DP release, or computed from DP releases and public values only; `by` names the ledger
  figure (task/privacy/ledger.py) that bounds it.
- DECLARED: leaves or is published un-noised, outside the guarantee; every run lists these in its
  privacy assumptions (the ledger's "outside the guarantee" line).
- OPT_OUT: withheld, unless the run sets dp.report-train-metrics = true; then DECLARED.
- WITHHELD: never sent or published under DP.
- PUBLIC: a constant, or a function of the run config and what the server itself chose.
Without DP nothing is covered and every value here may leave.
"""

from __future__ import annotations

from dataclasses import dataclass

COVERED, DECLARED, OPT_OUT, WITHHELD, PUBLIC = "covered", "declared", "opt-out", "withheld", "public"
# What a value is a function of.
MODEL, TRAIN_TEXT, HELD_OUT, DEVICE, SERVER = "model", "training text", "held-out text", "device state", "server"

USER_LEVEL = "the dp.mode's user-level figure (epsilon-central, epsilon-local; DP-FTRL's tree)"
# What covers a device's update, per dp.mode (review I1): against whom, and by which figure.
UPDATE_BY = {
    "central-client-clip": "the published models: epsilon-central (the server sees the clipped update)",
    "central-adaptive-clip": "the published models: epsilon-central (the server sees the clipped update)",
    "central-ftrl": "the published models: DP-FTRL's epsilon-central (the server sees the clipped update)",
    "central-blt": "the published models: BLT-DP-FTRL's epsilon-central (the server sees the clipped update)",
    "central-server-clip": "the published models: epsilon-central (the server sees the raw update)",
    "local": "everyone, the server included: epsilon-local",
    "sgd": "one window of text, against everyone: epsilon-sample (DP-SGD; no user-level figure)",
}
DISCOVERY = "epsilon-discovery (TrieHH)"
ADAPTIVE = "epsilon-central: the noised count of central-adaptive-clip"


@dataclass(frozen=True)
class Value:
    name: str  # the key; a name ending in "*" declares every key with that prefix
    of: tuple[str, ...]  # what it is a function of
    under_dp: str
    by: str | dict = ""  # COVERED: the ledger figure that bounds it (per dp.mode: a dict)
    why: str = ""

    def matches(self, key: str) -> bool:
        return key.startswith(self.name[:-1]) if self.name.endswith("*") else key == self.name

    def covered_by(self, mode: str, sgd: bool = False) -> str:
        """What bounds this value under dp.mode `mode` (and DP-SGD), in words; "" if nothing does."""
        if self.under_dp != COVERED:
            return ""
        if isinstance(self.by, str):
            return self.by
        return self.by.get(mode) or (self.by["sgd"] if sgd else "")

    def leaves(self, dp_enabled: bool, report_train_metrics: bool = False) -> bool:
        """May this value leave (or be published) under the run's DP settings?"""
        if not dp_enabled:
            return True
        return self.under_dp != WITHHELD and (self.under_dp != OPT_OUT or report_train_metrics)


def _v(name: str, of, under_dp: str, by: str = "", why: str = "") -> Value:
    return Value(name, (of,) if isinstance(of, str) else tuple(of), under_dp, by, why)


# --- what a device sends: message type -> record name -> its values ---------------------------------
_COST = [_v(k, DEVICE, OPT_OUT, why="what the message cost the device; follows the size of its text")
         for k in ("compute-seconds", "cpu-seconds", "peak-memory-mb", "energy-joules", "energy-measured")]
# The held-out text is the device's last 20% of sentences, so which sentences they are, and how
# many, follows the size of its whole text: every held-out score is also a function of how much
# training text the device has (declared, not covered; review B1).
_SIZE = "the held-out part is the last 20% of all sentences: its size follows the training text's"
_HELD_OUT_SCORES = [
    _v("loss", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE), _v("top1", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE),
    _v("top3", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE),
    _v("keystroke-savings", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE),
    _v("num-examples", (HELD_OUT, TRAIN_TEXT), DECLARED, why="the number of held-out words scored; " + _SIZE),
    _v("all-top3", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE),
    _v("dp-weight", (), PUBLIC, why="1 for every device under DP"),
    # The baselines and the personal mix are fit on the device's training text (task/device.py).
    _v("baseline-*", (TRAIN_TEXT, HELD_OUT), WITHHELD, why="n-gram baselines counted on the training text"),
    _v("personal-*", (MODEL, TRAIN_TEXT, HELD_OUT), WITHHELD, why="the mix with the user's own training-text counts"),
    *_COST,
]
DEVICE_REPLIES: dict[str, dict[str, list[Value]]] = {
    "train": {
        "arrays": [_v("*", (MODEL, TRAIN_TEXT), COVERED, UPDATE_BY, "the clipped (and noised) update")],
        "metrics": [
            _v("dp-weight", (), PUBLIC, why="1 for every device under DP"),
            _v("norm_bit", (MODEL, TRAIN_TEXT), COVERED, ADAPTIVE, "was the update clipped (adaptive clipping)"),
            _v("loss", (MODEL, TRAIN_TEXT), OPT_OUT), _v("top1", (MODEL, TRAIN_TEXT), OPT_OUT),
            _v("top3", (MODEL, TRAIN_TEXT), OPT_OUT), _v("num-examples", TRAIN_TEXT, OPT_OUT),
            _v("dpsgd-clipped-fraction", (MODEL, TRAIN_TEXT), OPT_OUT),
            _v("secagg-clipped-values", (MODEL, TRAIN_TEXT), OPT_OUT),
            # evaluate-in-train: the received model's score, as an evaluate reply gives it (off under DP)
            *(_v("eval-" + v.name, v.of, WITHHELD, why="evaluate-in-train is off under DP")
              for v in _HELD_OUT_SCORES),
            *_COST,
        ],
        # SecAgg+ (Flower's secaggplus_mod): public keys, encrypted key shares, the masked update, shares to unmask
        "secaggplus_configs": [_v("*", (MODEL, TRAIN_TEXT), COVERED, UPDATE_BY, "masked; only the sum is recovered")],
        # ... and beside the masked update, what remains of the training reply (features/secagg/client.py)
        "fitres.parameters": [_v("*", (), PUBLIC, why="emptied by secaggplus_mod: the update goes masked")],
        "fitres.num_examples": [_v("num_examples", (), PUBLIC, why="1: every device weighs the same")],
        "fitres.status": [_v("code", (), PUBLIC), _v("message", (), PUBLIC, why="empty")],
    },
    "evaluate": {"metrics": _HELD_OUT_SCORES},
    "query": {"vote": [_v("vote", TRAIN_TEXT, COVERED, DISCOVERY, "one TrieHH vote: a prefix or none")]},
}
# An error reply's code and reason. A reason is one of a closed set per code (never a name, a path,
# a value or text); anything else is replaced by the code's first reason, on the device
# (client_app/boundary.py) and again by the server before it publishes a failure.
FAILURE_CATEGORIES = ("internal error", "out of memory", "timed out", "storage or I/O error", "invalid value",
                      "arithmetic error")
ERROR_REASONS: dict[int, tuple[str, ...]] = {
    100: ("unusable text", "too little text", "partition has no text", "corpus has no sentences",  # DataError
          "corpus too small for the devices", "data-path is not a directory", "data-path does not exist",
          "data-path holds no files", "corpus cannot be read", "corpus is a binary file", "corpus shard unreadable",
          "bad partition-id", "model and vocabulary disagree", "shakespeare download failed (offline?)",
          "dp.delta too large for the text", "audit.canaries refused on a real device"),
    101: ("not eligible", "not eligible: metered network", "not eligible: not charging", "not eligible: battery low",
          "not eligible: simulated device not charging on Wi-Fi at this hour"),  # participation rules
    102: ("node-config value invalid", "node-config dp-required: the run's dp.mode is weaker",
          "node-config dp-required: the run would send what the required DP does not cover",
          "node-config dp-max-local-epsilon: the run's dp.local-epsilon is larger"),
    103: FAILURE_CATEGORIES,  # client_app/boundary.py
    104: ("a value task/releases.py does not declare or withholds (see the device's log)",),
}
DECLINED, FAILED, UNDECLARED = 101, 103, 104


def error_reason(code: int, reason: str) -> str | None:
    """The reason as it may leave a device or be published: itself if listed for its code, else the
    code's first reason; None for a code no device of this template sends."""
    allowed = ERROR_REASONS.get(code)
    if allowed is None:
        return None
    return reason if reason in allowed else allowed[0]


# What leaves a device outside any record: the server, and whoever reads Flower's own records,
# sees these for every message (review T1).
DEVICE_CHANNELS = [
    _v("reply status", DEVICE, DECLARED, why="replied, declined, late, busy or failed (error code and listed reason)"),
    _v("reply timing", (DEVICE, TRAIN_TEXT), DECLARED,
       why="when the reply arrived, and the ClientApp's compute time Flower's SuperNode sends with every reply "
           "(flwr ls shows its run total): both follow the size of the device's text"),
    _v("reply size", (), PUBLIC, why="the update has the model's shape; metrics have fixed keys"),
]


# The record type of each record name a device sends (review I2: a ConfigRecord named "arrays",
# or a list in a MetricRecord, passed a key-only check). MetricRecord values must be scalars.
RECORD_TYPES = {"arrays": "ArrayRecord", "metrics": "MetricRecord", "vote": "ConfigRecord",
                "secaggplus_configs": "ConfigRecord", "fitres.parameters": "ArrayRecord",
                "fitres.num_examples": "MetricRecord", "fitres.status": "ConfigRecord", "fitres.metrics": "ConfigRecord"}


def device_value(message_type: str, record: str, key: str) -> Value | None:
    """The declaration of a value a device sends, or None if it is not declared."""
    record = "metrics" if record == "fitres.metrics" else record  # the training metrics, as SecAgg+ carries them
    for value in DEVICE_REPLIES.get(message_type, {}).get(record, []):
        if value.matches(key):
            return value
    return None


# --- what the server publishes: where -> its values -------------------------------------------------
_COUNTS = DECLARED  # who was asked, replied, declined, was late, busy or failed: the server sees it
PUBLISHED: dict[str, list[Value]] = {
    # metrics.json / metrics.csv columns; train_<k> and eval_<k> are the devices' values aggregated
    "metrics": [
        _v("round", (), PUBLIC),
        *(_v(f"{phase}_{k}", DEVICE, _COUNTS) for phase in ("train", "eval")
          for k in ("sampled", "replied", "failed", "not_eligible", "late", "busy", "bytes_sent",
                    "bytes_received", "cost_reported")),
        *(_v("train_" + v.name.replace("-", "_"), v.of, v.under_dp, v.by, v.why)
          for v in DEVICE_REPLIES["train"]["metrics"] if v.name != "norm_bit"),  # the server drops norm bits
        *(_v("eval_" + v.name.replace("-", "_"), v.of, v.under_dp, v.by, v.why) for v in _HELD_OUT_SCORES),
        _v("eval_perplexity", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why=_SIZE),
        _v("train_perplexity", (MODEL, TRAIN_TEXT), OPT_OUT),
        _v("server_*", MODEL, COVERED, USER_LEVEL, "the released model scored on public synthetic users"),
        _v("dp_*", (SERVER, DEVICE), PUBLIC, why="the ledger's report: public settings, release and device counts"),
        _v("seconds", (SERVER, DEVICE), OPT_OUT, why="a round's wall time follows the devices' compute"),
        _v("failures", DEVICE, _COUNTS, why="failure categories and their counts, no node ids"),
        _v("vocab_added", TRAIN_TEXT, COVERED, DISCOVERY), _v("discovery_*", TRAIN_TEXT, COVERED, DISCOVERY),
    ],
    "summary": [
        *(_v(k, SERVER, PUBLIC) for k in ("run_dir", "model", "vocab", "litert", "metrics", "metrics_csv", "plot",
                                          "rounds", "stopped_early", "privacy_assumptions", "litert_check")),
        _v("final", (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED, why="the last evaluated row's eval_ and server_ values"),
        *(_v(k, (MODEL, HELD_OUT, TRAIN_TEXT), DECLARED) for k in ("best_eval_top3", "best_eval_top3_round", "best_eval_loss",
                                                       "first_eval_loss")),
        _v("privacy", (SERVER, DEVICE), PUBLIC, why="the last row's dp_ values"),
        _v("vocab_added", TRAIN_TEXT, COVERED, DISCOVERY), _v("discoveries", TRAIN_TEXT, COVERED, DISCOVERY),
        _v("device_cost", DEVICE, DECLARED, why="bytes per device; energy and memory only where devices sent them"),
    ],
    "checkpoint": [
        _v("arrays", MODEL, COVERED, USER_LEVEL),
        *(_v(k, SERVER, PUBLIC) for k in ("fingerprint", "dp", "round", "num_arrays")),
        _v("weights_sha256", MODEL, COVERED, USER_LEVEL, "the checksum of the checkpoint's model"),
        _v("strategy", (MODEL, TRAIN_TEXT), COVERED, ADAPTIVE, "the adaptive clipping norm"),
        _v("privacy", (SERVER, DEVICE), PUBLIC, why="the ledger: releases, sample sizes, the worst device's count"),
        _v("vocab_added", TRAIN_TEXT, COVERED, DISCOVERY),
    ],
    # every file of <run dir> (server_app/run_record.py), by name; a name ending in "*" is a prefix
    "files": [
        _v("config.json", (), PUBLIC), _v("vocab.json", TRAIN_TEXT, COVERED, DISCOVERY, "base words, then discoveries"),
        _v("metrics.json", (MODEL, HELD_OUT, TRAIN_TEXT, DEVICE), DECLARED, why="its columns: 'metrics' above"),
        _v("metrics.csv", (MODEL, HELD_OUT, TRAIN_TEXT, DEVICE), DECLARED, why="its columns: 'metrics' above"),
        _v("metrics.png", (MODEL, HELD_OUT, TRAIN_TEXT, DEVICE), DECLARED, why="drawn from metrics.json"),
        _v("participation.png", DEVICE, DECLARED, why="drawn from metrics.json's counts"),
        _v("summary.json", (MODEL, HELD_OUT, TRAIN_TEXT, DEVICE), DECLARED, why="its keys: 'summary' above"),
        _v("privacy-ledger.json", (SERVER, DEVICE), PUBLIC, why="'privacy-ledger.json' above"),
        _v("privacy-ledger.lock", (), PUBLIC, why="which run continues this one"),
        _v("checkpoints/*", MODEL, COVERED, USER_LEVEL, "the model; its state: 'checkpoint' above"),
        _v("final/*", MODEL, COVERED, USER_LEVEL, "the final model, its vocabulary and LiteRT files"),
        _v("(file times)", (SERVER, DEVICE, TRAIN_TEXT), DECLARED,
           why="each round rewrites metrics.json and writes a checkpoint: their times give each round's wall "
               "time, which follows the devices' compute (the 'seconds' column is withheld, the times are not)"),
        _v("flwr-output.log", (MODEL, HELD_OUT, TRAIN_TEXT, DEVICE), DECLARED,
           why="what scripts/run.sh captures: the round lines (published metrics), failing node ids"),
    ],
    # <run dir>/privacy-ledger.json: the ledger's write-ahead journal (task/privacy/ledger.py)
    "privacy-ledger.json": [_v("*", (SERVER, DEVICE), PUBLIC, why="as the checkpoint's privacy: no per-device counts")],
    # the config of every message the server sends to devices
    "device config": [
        *(_v(k, SERVER, PUBLIC) for k in ("server-round", "round-offset", "round-goal", "evaluate-first", "depth")),
        _v("proximal-mu", SERVER, PUBLIC, why="FedProx's weight of the proximal term (server-optimizer = fedprox)"),
        _v("clipping_norm", (MODEL, TRAIN_TEXT), COVERED, ADAPTIVE, "dp.clipping-norm, or the adaptive one"),
        _v("vocab-added", TRAIN_TEXT, COVERED, DISCOVERY), _v("prefixes", TRAIN_TEXT, COVERED, DISCOVERY),
    ],
}


def published_value(where: str, key: str) -> Value | None:
    for value in PUBLISHED[where]:
        if value.matches(key):
            return value
    return None
