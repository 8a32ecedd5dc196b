"""The device's side of the release boundary, derived from its one inventory (task/releases.py):
the real ClientApp under every dp.mode sends only declared values, changing a device's training
text changes only covered values, and changing its held-out text only declared evaluation values.
(The server's side: tests/integration/test_published_boundary.py.)"""

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from client_app.app import app
from task.config import DP_MODES, EVALUATE_FIRST, MECHANISM_MODES, QUERY_DEPTH, Config
from task.model import build_model
from task.releases import COVERED, DECLARED, FAILED, HELD_OUT, TRAIN_TEXT, UNDECLARED, device_value
from tests.helpers import SMALL_MODEL, context, message

CFG = Config(model=SMALL_MODEL, max_local_steps=3)
WORDS = ("the cat sat on a mat and then we went to the park with my friend to see a film about the sea "
         "i will call you later when i get home from work tonight").split()


def write_text(folder, seed: int, held_out_seed: int, n: int = 50) -> str:
    """n sentences: the first 80% (training) drawn with `seed`, the last 20% (held out) with `held_out_seed`."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = np.random.default_rng(seed), np.random.default_rng(held_out_seed)
    lines = [" ".join((train if i < n * 0.8 else test).choice(WORDS, 9)) + "." for i in range(n)]
    (folder / "notes.txt").write_text("\n".join(lines))
    return str(folder)


def reply_of(cfg: Config, kind: str, node: dict, config: dict | None = None):
    weights = build_model(cfg.model).get_weights()
    content = {"config": ConfigRecord({"server-round": 1, "clipping_norm": 1.0, **(config or {})})}
    if kind != "query":
        content["arrays"] = ArrayRecord(weights)
    return app(message(RecordDict(content), kind), context(cfg, node))


def undeclared(reply, kind: str, cfg: Config) -> list[str]:
    """Every value of `reply` the inventory does not let leave under `cfg`'s DP settings."""
    out = []
    for record, values in reply.content.items():
        for key in values.keys():
            value = device_value(kind, record, key)
            if value is None or not value.leaves(cfg.dp.enabled, cfg.dp.report_train_metrics):
                out.append(f"{record}/{key}")
    return out


def values(reply) -> dict:
    return {(r, k): v for r, rec in reply.content.items() for k, v in rec.items()}


CORE_MODES = [m for m in DP_MODES if m not in MECHANISM_MODES]  # the others: tests/features/dp/


@pytest.mark.parametrize("mode", CORE_MODES)
def test_every_reply_under_every_dp_mode_carries_only_declared_values(mode):
    assert_only_declared_values(mode)


def assert_only_declared_values(mode: str, kinds=("train", "evaluate"), sgd: bool = False,
                                keys: dict | None = None) -> None:
    """`kinds`: "query" needs features/discovery (tests/features/discovery/); `keys`: run-config
    keys of a feature's path (participation.*, transfer.dtype, ...)."""
    cfg = replace(CFG, dp=replace(CFG.dp, mode=mode, local_epsilon=8.0, sgd=sgd, sgd_sampling_rate=0.5))
    cfg = cfg.with_run_config(keys) if keys else cfg
    node = {"partition-id": 0, "num-partitions": 4}
    configs = {"train": {EVALUATE_FIRST: True}, "evaluate": {}, "query": {QUERY_DEPTH: 1}}
    for kind, config in ((k, configs[k]) for k in kinds):
        reply = reply_of(cfg, kind, node, config)
        assert not reply.has_error(), (mode, kind, reply.error.reason if reply.has_error() else "")
        assert undeclared(reply, kind, cfg) == [], (mode, kind)
        if mode != "none" and kind != "query":  # nothing fit on the training text leaves with a score
            assert not [k for (_, k) in values(reply) if k.startswith(("baseline-", "personal-", "eval-"))]


def test_a_value_added_without_declaring_it_is_refused_not_sent(monkeypatch, caplog):
    """A test-only patch adds a metric: the device fails closed (an error naming the key), and
    the inventory check above flags the same value when the boundary mod is bypassed."""
    from task import device

    original = device.evaluate_round
    monkeypatch.setattr(device, "evaluate_round", lambda *a, **k: {**original(*a, **k), "secret-count": 3})
    node = {"partition-id": 0, "num-partitions": 4}
    reply = reply_of(CFG, "evaluate", node)
    assert reply.has_error() and reply.error.code == UNDECLARED
    assert "refused to send metrics/secret-count" in caplog.text  # named in the device's own log

    monkeypatch.setattr("client_app.boundary.boundary_mod", lambda msg, ctx, call_next: call_next(msg, ctx))
    import importlib

    import client_app.app as client

    bypassed = importlib.reload(client)  # the app's mod lists rebuilt with the boundary bypassed
    try:
        reply = bypassed.app(message(RecordDict({"arrays": ArrayRecord(build_model(CFG.model).get_weights()),
                                                  "config": ConfigRecord({"server-round": 1})}), "evaluate"),
                             context(CFG, node))
        assert not reply.has_error()
        assert undeclared(reply, "evaluate", CFG) == ["metrics/secret-count"]
    finally:
        monkeypatch.undo()
        importlib.reload(client)


def test_a_withheld_value_is_refused_under_dp(caplog):
    """personal-* is withheld under DP: a device that computed it anyway would not send it."""
    from client_app.boundary import boundary_mod
    from flwr.app import Message, MetricRecord

    cfg = replace(CFG, dp=replace(CFG.dp, mode="central-client-clip"))
    msg = message(RecordDict({"config": ConfigRecord({})}), "evaluate")
    leaky = boundary_mod(msg, context(cfg), lambda m, c: Message(RecordDict({"metrics": MetricRecord(
        {"top3": 0.5, "personal-top3-0": 0.7})}), reply_to=m))
    assert leaky.has_error() and leaky.error.code == UNDECLARED and "personal-top3-0: withheld" in caplog.text
    plain = boundary_mod(msg, context(CFG), lambda m, c: Message(RecordDict({"metrics": MetricRecord(
        {"top3": 0.5, "personal-top3-0": 0.7})}), reply_to=m))
    assert not plain.has_error()  # without DP it is declared and may leave


def test_any_failure_leaves_as_its_category_only(monkeypatch, caplog):
    """O4: an exception that is not a DataError reached the server verbatim (paths, text)."""
    from task import device

    def broken(*a, **k):
        raise RuntimeError("cannot parse /home/alice/diary.txt near 'my password is swordfish'")

    monkeypatch.setattr(device, "train_round", broken)
    reply = reply_of(CFG, "train", {"partition-id": 0, "num-partitions": 4})
    assert reply.has_error() and reply.error.code == FAILED
    assert reply.error.reason == "internal error"
    assert "swordfish" in caplog.text  # in full in the device's own log


def test_changing_only_the_training_text_changes_only_covered_values(tmp_path):
    assert_training_text_moves_only_covered_values(tmp_path, "central-client-clip")


def assert_training_text_moves_only_covered_values(tmp_path, mode: str) -> None:
    cfg = replace(CFG, dp=replace(CFG.dp, mode=mode, local_epsilon=8.0))
    a = {"data-path": write_text(tmp_path / "a", seed=1, held_out_seed=9)}
    b = {"data-path": write_text(tmp_path / "b", seed=2, held_out_seed=9)}
    for kind in ("train", "evaluate"):
        ra, rb = values(reply_of(cfg, kind, a)), values(reply_of(cfg, kind, b))
        assert ra.keys() == rb.keys()
        changed = {key for key in ra if not np.array_equal(np.asarray(_plain(ra[key])), np.asarray(_plain(rb[key])))}
        assert {device_value(kind, r, k).under_dp for r, k in changed} <= {COVERED}, (kind, changed)
        if kind == "train":
            assert changed  # the update is covered, and it moved


def test_how_much_training_text_a_device_has_moves_only_covered_values_and_values_declared_to_depend_on_it(tmp_path):
    """Review B1: the held-out part is the last 20% of all sentences, so its size follows the
    training text's; the evaluation values are declared as depending on it (not covered)."""
    cfg = replace(CFG, dp=replace(CFG.dp, mode="central-client-clip"))
    small = {"data-path": write_text(tmp_path / "small", seed=1, held_out_seed=9, n=50)}
    large = {"data-path": write_text(tmp_path / "large", seed=1, held_out_seed=9, n=120)}
    for kind in ("train", "evaluate"):
        ra, rb = values(reply_of(cfg, kind, small)), values(reply_of(cfg, kind, large))
        changed = {key for key in ra if not np.array_equal(np.asarray(_plain(ra[key])), np.asarray(_plain(rb[key])))}
        for record, key in changed:
            value = device_value(kind, record, key)
            assert value.under_dp == COVERED or TRAIN_TEXT in value.of, (kind, key)
        if kind == "evaluate":
            assert ("metrics", "num-examples") in changed  # the size does show: declared as such


def test_without_dp_the_training_text_does_reach_the_scores(tmp_path):
    """The check above has power: without DP the baselines and the mix move with the training text."""
    a = {"data-path": write_text(tmp_path / "a", seed=1, held_out_seed=9)}
    b = {"data-path": write_text(tmp_path / "b", seed=2, held_out_seed=9)}
    ra, rb = values(reply_of(CFG, "evaluate", a)), values(reply_of(CFG, "evaluate", b))
    assert ra[("metrics", "baseline-bigram-top3")] != rb[("metrics", "baseline-bigram-top3")] or \
        ra[("metrics", "personal-top3-0")] != rb[("metrics", "personal-top3-0")]


def test_changing_only_the_held_out_text_changes_only_declared_evaluation_values(tmp_path):
    cfg = replace(CFG, dp=replace(CFG.dp, mode="central-client-clip"))
    a = {"data-path": write_text(tmp_path / "a", seed=1, held_out_seed=8)}
    b = {"data-path": write_text(tmp_path / "b", seed=1, held_out_seed=9)}
    ta, tb = values(reply_of(cfg, "train", a)), values(reply_of(cfg, "train", b))
    assert ta.keys() == tb.keys() and all(np.array_equal(_plain(ta[k]), _plain(tb[k])) for k in ta)
    ea, eb = values(reply_of(cfg, "evaluate", a)), values(reply_of(cfg, "evaluate", b))
    changed = {k for k in ea if ea[k] != eb[k]}
    assert changed, "the held-out text changed, so its scores should"
    for record, key in changed:
        value = device_value("evaluate", record, key)
        assert value.under_dp == DECLARED and HELD_OUT in value.of, key


def _plain(v):
    return v.numpy() if hasattr(v, "numpy") else v


def test_an_error_reply_leaves_with_a_listed_reason_only(caplog):
    """Review B2: an error's reason passed the boundary unchecked and was published in metrics.json.
    A reason outside task/releases.py's list for its code is replaced on the device, and again by
    the server before it publishes a failure."""
    from flwr.app import Error, Message

    from client_app.boundary import boundary_mod
    from server_app.observed_grid import failure_reason

    msg = message(RecordDict({"config": ConfigRecord({})}), "train")
    leaky = boundary_mod(msg, context(CFG), lambda m, c: Message(Error(100, "diary line: my pin is 4711"), reply_to=m))
    assert leaky.error.code == 100 and leaky.error.reason == "unusable text"
    assert "4711" in caplog.text  # only in the device's own log
    listed = boundary_mod(msg, context(CFG), lambda m, c: Message(Error(100, "too little text"), reply_to=m))
    assert listed.error.reason == "too little text"
    unknown = boundary_mod(msg, context(CFG), lambda m, c: Message(Error(7, "my pin is 4711"), reply_to=m))
    assert unknown.error.code == FAILED and "4711" not in unknown.error.reason
    # the server maps again: a device running other code cannot publish through a reason
    assert failure_reason(100, "my pin is 4711") == "unusable text"
    assert failure_reason(103, "out of memory") == "out of memory"
    assert "4711" not in failure_reason(1, "ClientApp raised ValueError: my pin is 4711")


def test_an_update_with_an_extra_array_is_refused(monkeypatch, caplog):
    """Review I2: the boundary checked key names only, so `arrays/*` let any extra array leave."""
    from task import device

    original = device.train_round

    def smuggling(*a, **k):
        weights, metrics = original(*a, **k)
        return [*weights, np.frombuffer(b"my pin is 4711", np.uint8).astype(np.float32)], metrics

    monkeypatch.setattr(device, "train_round", smuggling)
    reply = reply_of(CFG, "train", {"partition-id": 0, "num-partitions": 4})  # (DP's clipping mods refuse it too)
    assert reply.has_error() and reply.error.code == UNDECLARED
    assert "arrays differ from the received model's" in caplog.text


@pytest.mark.parametrize("required, mode, refused", [("local", "central-client-clip", True),
                                                     ("central", "central-client-clip", False),
                                                     ("any", "none", True), ("any", "central-server-clip", False)])
def test_a_device_refuses_a_run_whose_dp_is_weaker_than_it_requires(required, mode, refused):
    """Review L1: dp.mode comes with the run, from whoever submits it; a device pins the weakest
    protection it accepts in its own node config, and refuses anything weaker before training."""
    cfg = replace(CFG, dp=replace(CFG.dp, mode=mode, local_epsilon=8.0))
    reply = reply_of(cfg, "train", {"partition-id": 0, "num-partitions": 4, "dp-required": required})
    assert reply.has_error() == refused
    if refused:
        assert reply.error.code == 102 and reply.error.reason == "node-config dp-required: the run's dp.mode is weaker"


@pytest.mark.parametrize("mode, sgd", [(m, False) for m in DP_MODES if m != "none"] + [("none", True)])
def test_every_covered_value_names_what_covers_it_under_each_dp_mode(mode, sgd):
    """Review I1: one treatment for all modes said the update was covered by a user-level figure
    under DP-SGD alone (there is none) and in central-server-clip (the server sees it raw)."""
    from task.releases import DEVICE_REPLIES

    for kind, records in DEVICE_REPLIES.items():
        for record, declared in records.items():
            for value in declared:
                if value.under_dp == COVERED:
                    assert value.covered_by(mode, sgd), (mode, kind, record, value.name)
    update = device_value("train", "arrays", "0").covered_by(mode, sgd)
    expected = {"none": "epsilon-sample", "local": "epsilon-local", "central-server-clip": "raw update"}
    assert expected.get(mode, "epsilon-central") in update


def _leaks(kind: str, content, cfg=None, config: dict | None = None):
    """The boundary's answer to a handler that replies `content` (a RecordDict) to a `kind` message."""
    from flwr.app import Message

    from client_app.boundary import boundary_mod

    received = RecordDict({"config": ConfigRecord(config or {}),
                           "arrays": ArrayRecord([np.zeros((2, 3), np.float32)])})
    return boundary_mod(message(received, kind), context(cfg or CFG), lambda m, c: Message(content, reply_to=m))


def test_a_value_of_another_type_or_size_than_declared_is_refused():
    """Review I2 (second review): key names alone let a ConfigRecord named 'arrays', a list in a
    metric, float64 arrays, a dp-weight other than 1 and a whole word as a vote leave."""
    from flwr.app import MetricRecord

    dp = replace(CFG, dp=replace(CFG.dp, mode="central-client-clip"))
    secret = "my pin is 4711"
    cases = [
        ("train", RecordDict({"arrays": ConfigRecord({"0": secret.encode()})}), dp, {}),
        ("evaluate", RecordDict({"metrics": MetricRecord({"loss": [float(ord(c)) for c in secret]})}), dp, {}),
        ("evaluate", RecordDict({"metrics": MetricRecord({"top3": 0.5, "dp-weight": 123456789})}), dp, {}),
        ("train", RecordDict({"arrays": ArrayRecord([np.zeros((2, 3), np.float64)])}), dp, {}),
        ("query", RecordDict({"vote": ConfigRecord({"vote": secret})}), CFG, {QUERY_DEPTH: 2, "prefixes": ["m"]}),
        ("query", RecordDict({"vote": ConfigRecord({"vote": "zq"})}), CFG, {QUERY_DEPTH: 2, "prefixes": ["m"]}),
    ]
    for kind, content, cfg, config in cases:
        reply = _leaks(kind, content, cfg, config)
        assert reply.has_error() and reply.error.code == UNDECLARED, (kind, content)
    fine = _leaks("query", RecordDict({"vote": ConfigRecord({"vote": "my"})}), CFG, {QUERY_DEPTH: 2, "prefixes": ["m"]})
    assert not fine.has_error()  # a prefix one longer than one the server sent
    fine = _leaks("train", RecordDict({"arrays": ArrayRecord([np.ones((2, 3), np.float32)])}), dp)
    assert not fine.has_error()


@pytest.mark.parametrize("node, run, kind, refused", [
    ({"dp-required": "central"}, {"report_train_metrics": True, "mode": "central-client-clip"}, "train", True),
    ({"dp-required": "local"}, {"mode": "local"}, "evaluate", True),  # held-out scores: not covered by local DP
    ({"dp-required": "local"}, {"mode": "local"}, "query", True),  # a TrieHH vote trusts the server
    ({"dp-required": "local"}, {"mode": "local"}, "train", False),
    ({"dp-max-local-epsilon": 8.0}, {"mode": "local", "local_epsilon": 1e5}, "train", True),
    ({"dp-max-local-epsilon": 8.0}, {"mode": "local", "local_epsilon": 4.0}, "train", False),
])
def test_a_devices_dp_pin_covers_what_the_run_config_could_still_ask_for(node, run, kind, refused):
    """Review L1 (second review): dp-required checked dp.mode only, so a run with
    dp.report-train-metrics, an evaluate or query message, or a huge dp.local-epsilon got through."""
    from client_app.boundary import refusal

    cfg = replace(CFG, dp=replace(CFG.dp, **run))
    assert (refusal(node, cfg, kind) is not None) == refused
