"""The real ClientApp, called with real Flower Messages and Contexts (no runtime needed)."""


import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from client_app.app import DEVICE_DATA_UNUSABLE, app
from task.config import Config, ModelConfig
from task.model import build_model
from tests.helpers import context, message

CFG = Config(sentences_per_device=40, model=ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16,
                                                       num_heads=2, ffn_dim=32))


def call(message_type: str, node_config: dict) -> Message:
    weights = build_model(CFG.model).get_weights()
    content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"server-round": 1})})
    return app(message(content, message_type), context(CFG, node_config))


def test_train_replies_with_new_weights_of_the_same_shapes_and_metrics():
    reply = call("train", {"partition-id": 0, "num-partitions": 5})
    assert not reply.has_error()
    new = reply.content["arrays"].to_numpy_ndarrays()
    old = build_model(CFG.model).get_weights()
    assert [a.shape for a in new] == [a.shape for a in old]
    assert any(not np.allclose(a, b) for a, b in zip(new, old))
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] > 0 and 0 <= metrics["top1"] <= metrics["top3"] <= 1
    assert set(reply.content.keys()) == {"arrays", "metrics"}  # nothing but weights and metrics leaves


def test_evaluate_replies_with_metrics_and_baselines_only():
    reply = call("evaluate", {"partition-id": 1, "num-partitions": 5})
    assert not reply.has_error()
    assert set(reply.content.keys()) == {"metrics"}
    metrics = reply.content["metrics"]
    assert {"loss", "top1", "top3", "num-examples", "baseline-bigram-top3", "baseline-unigram-top3"} <= set(metrics)


def test_a_device_with_unusable_text_replies_with_the_problem_but_no_path(tmp_path, caplog):
    (tmp_path / "empty-diary-of-alice.txt").write_text("")
    for node_config, category in (({"data-path": str(tmp_path)}, "too little text"),
                                  ({"data-path": str(tmp_path / "missing")}, "data-path does not exist")):
        reply = call("train", node_config)
        assert reply.has_error()
        assert reply.error.code == DEVICE_DATA_UNUSABLE
        assert reply.error.reason.startswith(category), reply.error.reason
        # the server (which names the node itself) learns the category, never a file name or path
        assert str(tmp_path) not in reply.error.reason and "alice" not in reply.error.reason
    assert str(tmp_path) in caplog.text  # the device's own log has it in full


def test_no_raw_text_of_the_device_leaves_it(tmp_path):
    """Serialise the replies exactly as they go on the wire and look for the device's text."""
    from flwr.common.serde import message_to_proto

    sentences = [f"my secret diary entry number {i} says the password is swordfish{i}" for i in range(30)]
    (tmp_path / "diary.txt").write_text(".\n".join(sentences))
    for message_type in ("train", "evaluate"):
        reply = call(message_type, {"data-path": str(tmp_path)})
        assert not reply.has_error()
        wire = message_to_proto(reply).SerializeToString()
        for i, sentence in enumerate(sentences):
            assert sentence.encode() not in wire and f"swordfish{i}".encode() not in wire
        assert b"secret diary" not in wire and b"password" not in wire


def test_a_train_message_can_score_the_received_model_first_exactly_as_an_evaluate_message_would():
    from task.config import EVAL_PREFIX, EVALUATE_FIRST
    from task.privacy import DP_WEIGHT

    weights = build_model(CFG.model).get_weights()
    node = {"partition-id": 2, "num-partitions": 5}
    content = RecordDict({"arrays": ArrayRecord(weights),
                          "config": ConfigRecord({"server-round": 1, EVALUATE_FIRST: True})})
    reply = app(message(content, "train"), context(CFG, node))
    assert not reply.has_error() and set(reply.content.keys()) == {"arrays", "metrics"}
    evaluated = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"server-round": 1})}),
                            "evaluate"), context(CFG, node))
    sent = reply.content["metrics"]
    score = {k.removeprefix(EVAL_PREFIX): v for k, v in sent.items() if k.startswith(EVAL_PREFIX)}
    expected = dict(evaluated.content["metrics"])
    score.pop("compute-seconds"), expected.pop("compute-seconds"), expected.pop(DP_WEIGHT)
    assert score == expected  # the model as received, before this device trained it
    assert sent["loss"] != score["loss"]  # training metrics stay apart


def scores_first_under(mode: str) -> None:
    """Asked to score first under DP, a device still trains, passes Flower's clipping mods, and
    sends no score in its training reply (evaluate-in-train is off under DP: task/releases.py)."""
    from dataclasses import replace

    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    from task.config import EVAL_PREFIX, EVALUATE_FIRST

    weights = build_model(CFG.model).get_weights()
    cfg = replace(CFG, dp=replace(CFG.dp, mode=mode))
    config = ConfigRecord({"server-round": 1, EVALUATE_FIRST: True, KEY_CLIPPING_NORM: 1.0})
    reply = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": config}), "train"),
                context(cfg, {"partition-id": 0, "num-partitions": 5}))
    assert not reply.has_error(), (mode, reply.error.reason if reply.has_error() else "")
    scores = [k for k in reply.content["metrics"] if k.startswith(EVAL_PREFIX)]
    assert ("eval-top3" in scores) if mode == "none" else not scores, mode


def test_scoring_first_passes_flowers_clipping_mods_in_every_core_dp_mode():
    """(The other modes: tests/features/dp/test_adaptive_clipping.py.)"""
    from task.config import DP_MODES, MECHANISM_MODES

    for mode in DP_MODES:
        if mode not in MECHANISM_MODES:
            scores_first_under(mode)


def test_under_dp_no_evaluation_reply_tells_how_long_the_device_computed():
    """Scoring time follows the size of the device's text, which no noise covers. (DP-SGD:
    tests/features/dp/test_dpsgd.py.)"""
    from dataclasses import replace

    assert_no_timing_is_sent(replace(CFG.dp, mode="central-client-clip"))


def assert_no_timing_is_sent(dp, participation: bool = False) -> None:
    """`participation`: with its cost mod (tests/features/participation/)."""
    from dataclasses import replace

    from task.config import EVALUATE_FIRST

    weights = build_model(CFG.model).get_weights()
    node = {"partition-id": 0, "num-partitions": 5}
    cfg = replace(CFG, dp=dp)
    cfg = cfg.with_run_config({"participation.availability": "always"}) if participation else cfg
    for kind, config in (("evaluate", {"server-round": 1}), ("train", {"server-round": 1, EVALUATE_FIRST: True,
                                                                       "clipping_norm": 1.0})):
        reply = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord(config)}), kind),
                    context(cfg, node))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        sent = set(reply.content["metrics"])
        assert "top3" in sent or kind == "train"
        assert not {k for k in sent if "seconds" in k or "energy" in k or "memory" in k}, (kind, sorted(sent))
