"""Growing the vocabulary: new words appended, the model grows their rows and nothing else
changes; devices read the grown vocabulary from the message; a device votes on its own unknown
words through the real ClientApp; the new-word scenario's text; resume and export follow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from client_app.app import app
from features.discovery import new_word
from features.discovery.growth import grow_weights
from task.config import QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE, VOCAB_ADDED, Config, ConfigError, ModelConfig
from task.data.device_text import load_device_text
from task.data.vocab import UNK_ID, default_vocabulary, run_vocabulary
from task.model import build_model
from task.privacy.ledger import PrivacyLedger
from tests.helpers import SMALL_MODEL, context, message

CFG = Config(sentences_per_device=40, model=SMALL_MODEL)


def test_old_ids_keep_their_meaning_and_new_words_come_after():
    base = default_vocabulary(2000)
    grown = base.extended(["zorbix", "the", "zorbix", "quib"])  # "the" is known; repeats are skipped
    assert grown.words[:2000] == base.words and grown.words[2000:] == ["zorbix", "quib"]
    assert grown.encode(["the", "zorbix"]) == [base.encode(["the"])[0], 2000]
    assert run_vocabulary(2000, ("zorbix",)).encode(["zorbix", "nope"]) == [2000, UNK_ID]


def test_a_grown_model_scores_old_words_exactly_as_before_and_new_ones_start_as_unk():
    model = build_model(SMALL_MODEL, seed=3)
    weights = model.get_weights()
    x = np.random.default_rng(0).integers(4, 2000, size=(5, SMALL_MODEL.seq_len)).astype(np.int32)
    before = model(x).numpy()
    grown = build_model(ModelConfig(**{**SMALL_MODEL.__dict__, "vocab_size": 2002}))
    grown.set_weights(grow_weights(weights, 2002))  # the shapes a model of 2,002 words has
    after = grown(x).numpy()
    np.testing.assert_array_equal(after[..., :2000], before)  # every old word's logit, bit for bit
    np.testing.assert_array_equal(after[..., 2000], before[..., UNK_ID])  # a new word starts where <unk> is
    # and as an input, a new word reads as <unk> did
    y = x.copy(); y[:, 3] = 2001  # noqa: E702
    u = x.copy(); u[:, 3] = UNK_ID  # noqa: E702
    np.testing.assert_array_equal(grown(y).numpy()[..., :2000], model(u).numpy())
    with pytest.raises(ValueError, match="only grows"):
        grow_weights(weights, 1999)


def test_a_device_trains_and_evaluates_the_grown_model_with_the_words_the_message_names():
    weights = grow_weights(build_model(SMALL_MODEL).get_weights(), 2001)
    config = ConfigRecord({"server-round": 1, VOCAB_ADDED: ["zorbix"]})
    reply = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": config}), "train"), context(CFG))
    assert not reply.has_error(), reply.error
    assert [a.shape for a in reply.content["arrays"].to_numpy_ndarrays()] == [w.shape for w in weights]
    # without the word list the device refuses: its ids would not match the model's rows
    bare = ConfigRecord({"server-round": 1})
    reply = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": bare}), "evaluate"), context(CFG))
    assert reply.has_error() and "vocabulary" in reply.error.reason


def query(cfg, depth, prefixes=(), added=(), partition=0, server_round=1):
    config = ConfigRecord({QUERY_DEPTH: depth, "server-round": server_round})
    if prefixes:
        config[QUERY_PREFIXES] = list(prefixes)
    if added:
        config[VOCAB_ADDED] = list(added)
    node = {"partition-id": partition, "num-partitions": 50}
    return app(message(RecordDict({"config": config}), "query"), context(cfg, node))


def test_a_query_is_answered_with_one_prefix_of_the_devices_own_new_word_and_nothing_else():
    cfg = Config(sentences_per_device=40).with_run_config({"discovery.new-word": "zorbix", "discovery.new-word-adopters": 0.99})  # 8,000 words: no other unknown
    adopter = next(i for i in range(50) if new_word.is_adopter(i, cfg.seed, 0.99))
    reply = query(cfg, 3, prefixes=["zo"], partition=adopter)
    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {QUERY_VOTE}
    # its only unknown word (the built-in corpus is all in the dictionary) is the new one
    assert reply.content[QUERY_VOTE][QUERY_VOTE] == "zor"
    assert query(cfg, 3, prefixes=["ab"], partition=adopter).content[QUERY_VOTE][QUERY_VOTE] == ""
    # once the word is in the vocabulary, or before the device started typing it, it has no vote
    assert query(cfg, 1, added=["zorbix"], partition=adopter).content[QUERY_VOTE][QUERY_VOTE] == ""
    late = cfg.with_run_config({"discovery.new-word-from-round": 5})
    assert query(late, 1, partition=adopter, server_round=4).content[QUERY_VOTE][QUERY_VOTE] == ""
    assert query(late, 1, partition=adopter, server_round=5).content[QUERY_VOTE][QUERY_VOTE] == "z"


def test_the_scenario_gives_adopters_the_word_in_context_from_its_round_and_nobody_else():
    cfg = Config(sentences_per_device=100).with_run_config(
        {"discovery.new-word": "zorbix", "discovery.new-word-adopters": 0.4, "discovery.new-word-from-round": 3})
    adopters = [i for i in range(500) if new_word.is_adopter(i, cfg.seed, 0.4)]
    assert 0.34 < len(adopters) / 500 < 0.46
    base = load_device_text(cfg, partition_id=adopters[0], num_partitions=500)
    assert new_word.with_new_word(cfg, base, adopters[0], 2) is base
    later = new_word.with_new_word(cfg, base, adopters[0], 3)
    count = lambda part: sum(s.count("zorbix") for s in part)  # noqa: E731
    assert count(later.train) >= 0.1 * len(base.train) and count(later.test) >= 1
    late = next(i for i in range(500) if i not in adopters)
    assert count(new_word.with_new_word(cfg, load_device_text(cfg, partition_id=late, num_partitions=500), late, 9).train) == 0
    # every other word of its messages is in the default vocabulary: only the new word is unknown
    vocab = default_vocabulary(8000)
    words = {w for s in new_word.sentences("zorbix", 1, 200, 0) for w in s} - {"zorbix"}
    assert words and all(w in vocab for w in words)


def test_discovery_epsilon_is_its_own_ledger_line_composed_with_the_models_and_resumes():
    cfg = Config()
    ledger = PrivacyLedger(cfg.dp, population=100, sampled=10)
    assert "epsilon-discovery" not in ledger.report()
    ledger.record_discovery(2.0, 1e-6)
    ledger.record_discovery(1.5, 1e-6)
    report = ledger.report()
    assert report["epsilon-discovery"] == 3.5 and report["delta-discovery"] == 2e-6
    # the model has no user-level DP: no finite user-level total, so none is reported
    assert "epsilon-with-discovery" not in report and "delta-with-discovery" not in report
    restored = PrivacyLedger.from_state(cfg.dp, json.loads(json.dumps(ledger.state_dict())))
    assert restored.report()["epsilon-discovery"] == 3.5


@pytest.mark.parametrize("overrides, key", [
    ({"discovery.enabled": True, "server-optimizer": "fedadam"}, "server-optimizer"),
    ({"discovery.enabled": True, "dp.mode": "central-ftrl"}, "dp.mode"),
    ({"discovery.new-word": "two words"}, "discovery.new-word"),
    ({"discovery.new-word": "zorbix", "data.source": "corpus", "data.path": "x"}, "discovery.new-word"),
    ({"discovery.max-length": 0}, "discovery.max-length"),
])
def test_discovery_settings_that_cannot_work_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(overrides)


def test_resume_takes_the_discovered_words_and_refuses_weights_that_do_not_hold_them(tmp_path):
    from server_app.resume import dp_settings, load_resume_point
    from task.run.checkpoint import Checkpoint, checkpoint_path, model_fingerprint, save_checkpoint

    cfg = Config(model=SMALL_MODEL, num_server_rounds=4, resume_from=str(tmp_path))
    fingerprint = model_fingerprint(cfg, default_vocabulary(2000).words)  # of the base vocabulary, as a run writes it
    grown = grow_weights(build_model(SMALL_MODEL).get_weights(), 2002)
    state = {"fingerprint": fingerprint, "dp": dp_settings(cfg), "strategy": {}, "privacy": None,
             "vocab_added": ["zorbix", "quib"]}
    save_checkpoint(checkpoint_path(tmp_path, 1), Checkpoint(1, grown, state))
    (tmp_path / "metrics.json").write_text(json.dumps([{"round": 0}, {"round": 1}]))
    point = load_resume_point(cfg, fingerprint)
    assert point.checkpoint.state["vocab_added"] == ["zorbix", "quib"] and len(point.checkpoint.weights[0]) == 2002
    save_checkpoint(checkpoint_path(tmp_path, 2), Checkpoint(2, grown, {**state, "vocab_added": ["zorbix"]}))
    with pytest.raises(ConfigError, match="2002 word rows.*2000 words \\+ 1 discovered"):
        load_resume_point(cfg, fingerprint)


class ClientAppGrid:
    """A grid whose devices are the real ClientApp, called in this process (no Flower runtime)."""

    def __init__(self, cfg: Config, devices: int):
        self.cfg, self.devices, self.asked = cfg, devices, 0

    def get_node_ids(self):
        return list(range(1, self.devices + 1))

    def create_message(self, content, message_type, dst_node_id, group_id):
        return message(content, message_type, dst=dst_node_id)

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        self.asked += len(messages)
        return [app(m, context(self.cfg, {"partition-id": m.metadata.dst_node_id - 1, "num-partitions": self.devices}))
                for m in messages]


def test_the_server_discovers_the_word_through_real_device_votes_and_grows_the_model_it_sends():
    from features.discovery.server import GrowingVocabulary, VocabularyGrowth

    cfg = Config(sentences_per_device=20, dp=Config().dp.__class__(delta=1e-2),
                 model=ModelConfig(**{**SMALL_MODEL.__dict__, "vocab_size": 8000})).with_run_config(
        {"discovery.new-word": "zorbix", "discovery.new-word-adopters": 0.9, "discovery.enabled": True,
         "discovery.epsilon": 20.0, "discovery.max-length": 8})  # 1/8 asked per level: ~22 votes vs theta 7
    ledger = PrivacyLedger(cfg.dp, population=200, sampled=10)
    growth = VocabularyGrowth(cfg, default_vocabulary(8000), ledger)
    assert growth.plan.theta == 7
    grid = ClientAppGrid(cfg, 200)

    class Inner:  # what the wrapped strategy is given
        def configure_train(self, server_round, arrays, config, grid):
            self.arrays, self.config = arrays, config
            return []

    inner = Inner()
    runner = GrowingVocabulary(inner, growth, discovery_grid=grid)
    weights = build_model(cfg.model).get_weights()
    runner.configure_train(1, ArrayRecord(weights), ConfigRecord({"round-offset": 0}), grid)
    assert growth.added == ["zorbix"] and growth.history[0]["levels"] == len("zorbix") + 1
    assert 0.5 * 200 * growth.plan.gamma * 7 < grid.asked < 1.5 * 200 * growth.plan.gamma * 7  # ~gamma x population per level
    sent = inner.arrays.to_numpy_ndarrays()
    assert len(sent[0]) == 8001 and list(inner.config[VOCAB_ADDED]) == ["zorbix"]
    np.testing.assert_array_equal(sent[0][:8000], weights[0])
    assert ledger.report()["epsilon-discovery"] == pytest.approx(growth.plan.spent(7)[0])
    # The next round is not a discovery round (discovery.every = 0): no query, same vocabulary.
    before = grid.asked
    runner.configure_train(2, ArrayRecord(sent), ConfigRecord({"round-offset": 0}), grid)
    assert grid.asked == before and len(ledger.discoveries) == 1


def test_the_on_device_export_carries_the_grown_vocabulary_and_can_suggest_a_new_word(tmp_path):
    from task.litert.export import VARIANTS, export_litert
    from task.litert.suggest import Suggester

    cfg = ModelConfig(**{**SMALL_MODEL.__dict__, "vocab_size": 2001})
    weights = grow_weights(build_model(SMALL_MODEL, seed=1).get_weights(), 2001)
    weights[-1][2000] += 50.0  # the new word's output bias: now the model's first suggestion everywhere
    model = build_model(cfg)
    model.set_weights(weights)
    vocab = run_vocabulary(2000, ("zorbix",))
    paths = export_litert(model, vocab, tmp_path, variants={"float32": VARIANTS["float32"]})
    assert json.loads((tmp_path / "vocab.json").read_text())["words"][-1] == "zorbix"
    suggestions = Suggester.from_files(paths["float32"]).suggest("see you")
    assert suggestions[0].word == "zorbix" and suggestions[0].word_id == 2000


def test_any_checkpoint_of_a_grown_run_exports_with_the_words_it_had(tmp_path):
    """scripts/tools/export_litert.py: a checkpoint from before a discovery and one from after it each
    export with their own vocabulary (the run's vocab.json holds the final one)."""
    from scripts.tools.export_litert import main as export_main
    from task.run.checkpoint import Checkpoint, checkpoint_path, save_checkpoint

    cfg = Config(model=SMALL_MODEL)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_run_config()))
    run_vocabulary(2000, ("zorbix",)).save(tmp_path / "vocab.json")
    weights = build_model(SMALL_MODEL).get_weights()
    save_checkpoint(checkpoint_path(tmp_path, 1), Checkpoint(1, weights, {"vocab_added": []}))
    save_checkpoint(checkpoint_path(tmp_path, 2), Checkpoint(2, grow_weights(weights, 2001), {"vocab_added": ["zorbix"]}))
    for round_, size in ((1, 2000), (2, 2001)):
        out = tmp_path / f"out-{round_}"
        assert export_main([str(tmp_path), "--round", str(round_), "--variants", "float32", "--out", str(out)]) == 0
        assert len(json.loads((out / "vocab.json").read_text())["words"]) == size
    # a checkpoint whose rows do not match its words is refused, naming both counts
    save_checkpoint(checkpoint_path(tmp_path, 3), Checkpoint(3, weights, {"vocab_added": ["zorbix"]}))
    assert export_main([str(tmp_path), "--round", "3", "--variants", "float32", "--out", str(tmp_path / "x")]) == 2


def test_a_warm_start_from_a_grown_checkpoint_is_refused_with_what_to_do_instead(tmp_path):
    from features.warm_start.server import initial_weights
    from task.run.checkpoint import Checkpoint, model_fingerprint, save_checkpoint

    cfg = Config(model=SMALL_MODEL).with_run_config({"warm-start.init-from": str(tmp_path / "round-002.npz")})
    fingerprint = model_fingerprint(cfg, default_vocabulary(2000).words)
    grown = grow_weights(build_model(SMALL_MODEL).get_weights(), 2001)
    save_checkpoint(tmp_path / "round-002.npz", Checkpoint(2, grown, {"fingerprint": fingerprint, "vocab_added": ["zorbix"]}))
    with pytest.raises(ConfigError, match="'warm-start.init-from'.*1 discovered word.*resume-from"):
        initial_weights(cfg, fingerprint)


def test_a_discovery_the_budget_cannot_pay_for_is_not_run():
    from features.discovery.server import VocabularyGrowth
    from task.privacy import PrivacyBudgetExceeded

    cfg = Config(dp=Config().dp.__class__(delta=1e-2, max_epsilon=5.0), model=SMALL_MODEL).with_run_config(
        {"discovery.enabled": True, "discovery.epsilon": 8.0})
    growth = VocabularyGrowth(cfg, default_vocabulary(2000), PrivacyLedger(cfg.dp, population=200, sampled=10))
    grid = ClientAppGrid(cfg, 200)
    with pytest.raises(PrivacyBudgetExceeded, match="next vocabulary discovery would raise epsilon-discovery"):
        growth.discover(grid, 1)
    assert grid.asked == 0 and growth.ledger.discoveries == []


class VotingGrid:
    """Devices 1..n as the server sees them: those with node id % 3 == 0 vote for the next prefix
    of "zz", those with % 3 == 1 reply without a vote (as the ClientApp does: ""), the others fail.
    `levels` keeps what each level asked and heard."""

    def __init__(self, devices: int):
        self.devices, self.levels = devices, []

    def get_node_ids(self):
        return list(range(1, self.devices + 1))

    def create_message(self, content, message_type, dst_node_id, group_id):
        return message(content, message_type, dst=dst_node_id)

    def send_and_receive(self, messages, timeout=None):
        from flwr.app import Error, Message

        replies, level = [], {"asked": 0, "replied": 0, "votes": 0}
        for m in messages:
            node, depth = m.metadata.dst_node_id, int(m.content["config"][QUERY_DEPTH])
            level["asked"] += 1
            if node % 3 == 2:
                replies.append(Message(Error(code=100, reason="too little text"), reply_to=m))
                continue
            vote = "zz$"[:depth] if node % 3 == 0 else ""
            level["replied"] += 1
            level["votes"] += bool(vote)
            replies.append(Message(RecordDict({QUERY_VOTE: ConfigRecord({QUERY_VOTE: vote})}), reply_to=m))
        self.levels.append(level)
        return replies


def test_the_discovery_log_counts_the_devices_that_replied_but_never_the_votes(caplog):
    """A device with no word to vote for replies with an empty vote: a reply, not a vote. How many
    votes a level got is not logged: it counts the devices with such a word, which TrieHH's
    threshold does not cover (review P1)."""
    import logging
    import re

    from features.discovery.server import VocabularyGrowth

    cfg = Config(dp=Config().dp.__class__(delta=1e-4), model=SMALL_MODEL).with_run_config(
        {"discovery.enabled": True, "discovery.epsilon": 20.0, "discovery.max-length": 2})  # theta 8, 1 in 9 asked: ~33 votes
    growth = VocabularyGrowth(cfg, default_vocabulary(2000), PrivacyLedger(cfg.dp, population=900, sampled=10))
    grid = VotingGrid(900)
    with caplog.at_level(logging.INFO, logger="flwr"):
        growth.discover(grid, 1)
    logged = [tuple(map(int, m.groups())) for m in re.finditer(
        r"level (\d+): (\d+) devices asked, (\d+) replied, \d+ prefix", caplog.text)]
    assert logged == [(i + 1, lv["asked"], lv["replied"]) for i, lv in enumerate(grid.levels)]
    assert growth.added == ["zz"] and len(logged) == 3  # z, zz, zz$
    assert "votes" not in caplog.text and all(0 < lv["votes"] < replied for lv, (_, _, replied) in zip(grid.levels, logged))
