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
DISCOVERY = "epsilon-discovery (TrieHH)"
ADAPTIVE = "epsilon-central: the noised count of central-adaptive-clip"


@dataclass(frozen=True)
class Value:
    name: str  # the key; a name ending in "*" declares every key with that prefix
    of: tuple[str, ...]  # what it is a function of
    under_dp: str
    by: str = ""  # COVERED: the ledger figure that bounds it
    why: str = ""

    def matches(self, key: str) -> bool:
        return key.startswith(self.name[:-1]) if self.name.endswith("*") else key == self.name

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
_HELD_OUT_SCORES = [
    _v("loss", (MODEL, HELD_OUT), DECLARED), _v("top1", (MODEL, HELD_OUT), DECLARED),
    _v("top3", (MODEL, HELD_OUT), DECLARED), _v("keystroke-savings", (MODEL, HELD_OUT), DECLARED),
    _v("num-examples", HELD_OUT, DECLARED, why="the number of held-out words scored"),
    _v("all-top3", (MODEL, HELD_OUT), DECLARED),
    _v("dp-weight", (), PUBLIC, why="1 for every device under DP"),
    # The baselines and the personal mix are fit on the device's training text (task/device.py).
    _v("baseline-*", (TRAIN_TEXT, HELD_OUT), WITHHELD, why="n-gram baselines counted on the training text"),
    _v("personal-*", (MODEL, TRAIN_TEXT, HELD_OUT), WITHHELD, why="the mix with the user's own training-text counts"),
    *_COST,
]
DEVICE_REPLIES: dict[str, dict[str, list[Value]]] = {
    "train": {
        "arrays": [_v("*", (MODEL, TRAIN_TEXT), COVERED, USER_LEVEL, "the clipped (and noised) update")],
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
        "secaggplus_configs": [_v("*", (MODEL, TRAIN_TEXT), COVERED, USER_LEVEL, "masked; only the sum is recovered")],
        # ... and beside the masked update, what remains of the training reply (features/secagg/client.py)
        "fitres.parameters": [_v("*", (), PUBLIC, why="emptied by secaggplus_mod: the update goes masked")],
        "fitres.num_examples": [_v("num_examples", (), PUBLIC, why="1: every device weighs the same")],
        "fitres.status": [_v("code", (), PUBLIC), _v("message", (), PUBLIC, why="empty")],
    },
    "evaluate": {"metrics": _HELD_OUT_SCORES},
    "query": {"vote": [_v("vote", TRAIN_TEXT, COVERED, DISCOVERY, "one TrieHH vote: a prefix or none")]},
}
# An error reply's code and reason, by code: the reason is a category, never a name, path or text.
DEVICE_ERRORS = {
    100: "the device's text is unusable: task.data.files.DataError's category",
    101: "the device declined the round (participation rules): the rule",
    102: "a node-config value is invalid: the key and the value its operator set",
    103: "the device failed: the exception's category only (client_app/boundary.py)",
    104: "the reply held a value this inventory does not declare: its key",
}
DECLINED, FAILED, UNDECLARED = 101, 103, 104


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
        _v("eval_perplexity", (MODEL, HELD_OUT), DECLARED),
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
        _v("final", (MODEL, HELD_OUT), DECLARED, why="the last evaluated row's eval_ and server_ values"),
        *(_v(k, (MODEL, HELD_OUT), DECLARED) for k in ("best_eval_top3", "best_eval_top3_round", "best_eval_loss",
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
    # <run dir>/privacy-ledger.json: the ledger's write-ahead journal (task/privacy/ledger.py)
    "privacy-ledger.json": [_v("*", (SERVER, DEVICE), PUBLIC, why="as the checkpoint's privacy: no per-device counts")],
    # the config of every message the server sends to devices
    "device config": [
        *(_v(k, SERVER, PUBLIC) for k in ("server-round", "round-offset", "round-goal", "evaluate-first", "depth")),
        _v("clipping_norm", (MODEL, TRAIN_TEXT), COVERED, ADAPTIVE, "dp.clipping-norm, or the adaptive one"),
        _v("vocab-added", TRAIN_TEXT, COVERED, DISCOVERY), _v("prefixes", TRAIN_TEXT, COVERED, DISCOVERY),
    ],
}


def published_value(where: str, key: str) -> Value | None:
    for value in PUBLISHED[where]:
        if value.matches(key):
            return value
    return None
