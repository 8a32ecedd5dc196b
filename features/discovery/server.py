"""The server's side of new-word discovery: TrieHH query rounds before the training rounds that
need them, the vocabulary and the model grown with what they find.

`GrowingVocabulary` wraps the run's strategy. Before round 1 (and every discovery.every
rounds after it) it runs one discovery: a query message per level to each connected device
sampled with probability gamma from a secret generator, one vote back from each
(client_app/app.py, `query`), prefixes with theta votes kept (features/discovery/triehh.py). New
words are appended to the vocabulary, the global model gains their rows (features/discovery/growth.py)
before the round's model is sent, and every train / evaluate message tells the devices the words
added. The epsilon of each discovery goes into the privacy ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from features.discovery.growth import grow_weights
from features.discovery.triehh import Discovery, Plan, capped
from task.config import QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE, ROUND_OFFSET, VOCAB_ADDED, Config
from task.data.vocab import Vocabulary, vocabulary_rows
from task.privacy.ledger import PrivacyLedger
from task.privacy.mechanisms import secret_rng

log = logging.getLogger("flwr")


class VocabularyGrowth:
    """The run's vocabulary (base + words added so far) and its discoveries."""

    def __init__(self, cfg: Config, base: Vocabulary, ledger: PrivacyLedger, added: Iterable[str] = ()):
        self.cfg, self.ledger = cfg, ledger
        self.vocab = base.extended(added)
        self.base_size = len(base)
        self.plan = Plan.for_budget(cfg.feature("discovery").epsilon, cfg.dp.delta, cfg.feature("discovery").max_length)
        self.history: list[dict] = []  # one entry per discovery (for the run's record)

    def around(self, strategy: Strategy, grid: Grid) -> GrowingVocabulary:
        """The run's strategy with this discovery's query rounds before its training rounds."""
        return GrowingVocabulary(strategy, self, discovery_grid=grid)

    @property
    def added(self) -> list[str]:
        return self.vocab.words[self.base_size:]

    def due(self, global_round: int) -> bool:
        every = self.cfg.feature("discovery").every
        return self.cfg.vocab_discovery and (global_round == 1 or (every > 0 and (global_round - 1) % every == 0))

    def assumptions(self) -> list[str]:
        p = self.plan
        eps, delta = p.spent(p.levels)
        return [f"vocabulary discovery (TrieHH): each connected device asked per level with probability "
                f"{p.gamma:.4g} from a secret generator, one vote each, a prefix kept at >= {p.theta} votes, at most "
                f"{p.levels} levels: at most epsilon {eps:.3g}, delta {delta:.3g} per discovery (basic composition "
                "over levels and discoveries); the server sees each sampled device's vote"]

    def discover(self, grid: Grid, global_round: int) -> list[str]:
        """One TrieHH discovery; appends and returns the new words."""
        self.ledger.check_discovery(*self.plan.spent(self.plan.levels))  # raises PrivacyBudgetExceeded
        d = Discovery(self.plan)
        rng = secret_rng()
        while not d.done:
            nodes = [n for n in sorted(grid.get_node_ids()) if rng.random() < self.plan.gamma]
            config = ConfigRecord({QUERY_DEPTH: d.depth, "server-round": global_round})
            previous = sorted(p for p in d.trie if len(p) == d.depth - 1)
            if previous:
                config[QUERY_PREFIXES] = previous
            if self.added:
                config[VOCAB_ADDED] = self.added
            messages = [grid.create_message(RecordDict({"config": config}), MessageType.QUERY, n,
                                            group_id=f"discovery-{global_round}-{d.depth}") for n in nodes]
            replies = list(grid.send_and_receive(messages, timeout=self.cfg.round_timeout)) if messages else []
            answered = [r for r in replies if not r.has_error() and QUERY_VOTE in r.content.config_records]
            votes = [r.content[QUERY_VOTE][QUERY_VOTE] or None for r in answered]  # None: no vote to give
            kept = d.add_level(votes)
            # Not the number of votes: it counts the asked devices with such a word, which TrieHH's
            # threshold does not cover (only the kept prefixes are private); review P1
            log.info("vocabulary discovery before round %d, level %d: %d devices asked, %d replied, "
                     "%d prefix(es) kept", global_round, d.depth - 1, len(nodes), len(answered), len(kept))
        found = capped([w for w in d.words if w not in self.vocab], self.cfg.feature("discovery").max_words, rng)
        eps, delta = self.plan.spent(d.levels_run)
        self.ledger.record_discovery(eps, delta)
        self.vocab = self.vocab.extended(found)
        self.history.append({"round": global_round, "levels": d.levels_run, "words": found,
                             "epsilon": eps, "delta": delta})
        log.info("vocabulary discovery before round %d: %d new word(s) %s, epsilon %.3g, delta %.3g",
                 global_round, len(found), found[:20], eps, delta)
        return found

    def grown(self, arrays: ArrayRecord) -> ArrayRecord:
        """The model with a row for every word of the vocabulary (unchanged if it has them)."""
        weights = arrays.to_numpy_ndarrays()
        if vocabulary_rows(weights) == len(self.vocab):
            return arrays
        return ArrayRecord(grow_weights(weights, len(self.vocab)))


class GrowingVocabulary(Strategy):
    """The run's strategy with discoveries before the rounds that need them."""

    def __init__(self, inner: Strategy, growth: VocabularyGrowth, discovery_grid: Grid):
        super().__init__()
        self.inner, self.growth, self.discovery_grid = inner, growth, discovery_grid

    def summary(self) -> None:
        log.info("\t├──> Vocabulary discovery (TrieHH): theta %d, gamma %.4g, up to %d letters",
                 self.growth.plan.theta, self.growth.plan.gamma, self.growth.plan.max_length)
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        global_round = server_round + int(config.get(ROUND_OFFSET, 0))
        if self.growth.due(global_round):
            self.growth.discover(self.discovery_grid, global_round)
        arrays = self.growth.grown(arrays)
        self._tell(config)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        self._tell(config)
        return self.inner.configure_evaluate(server_round, self.growth.grown(arrays), config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        return self.inner.aggregate_evaluate(server_round, replies)

    def _tell(self, config: ConfigRecord) -> None:
        if self.growth.added:
            config[VOCAB_ADDED] = self.growth.added
