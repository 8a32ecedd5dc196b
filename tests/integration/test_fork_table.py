"""The README's fork table holds: on a copy of the tree, each code-changing row's change is made as
a forker would (a builder and its registry line, ...), `git status` then lists exactly the files
the row's "edit" column names, and one short run uses every toy entry at once: a GRU, a strategy
that sends a value a term in the devices' loss reads, a data source and a partitioner. The config
check accepts the toy names (task/registry.py reads them from the files) and still refuses
unknown ones. The no-code row "one folder per person" is shown on the same copy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fork_copy import ROOT, append, changed_files, commit, edit, env, files_named, fork_table, row, tree_copy

# --- the changes, as a forker makes them ---------------------------------------------------------


def add_architecture(copy: Path) -> None:
    model = copy / "task/model.py"
    edit(model, "\n\n# The architectures by their", textwrap.dedent('''

        def _gru(cfg: ModelConfig, tokens, h):
            h = tf.keras.layers.GRU(cfg.ffn_dim, return_sequences=True, unroll=True, name="gru")(h)
            return tf.keras.layers.Dense(cfg.embed_dim, name="gru_out")(h)
        ''').rstrip("\n") + "\n\n\n# The architectures by their")
    edit(model, '"lstm": _lstm}', '"lstm": _lstm, "gru": _gru}')


def add_plain_strategy(copy: Path) -> None:  # a Flower strategy as it is, one that keeps state
    strategy = copy / "server_app/strategy.py"
    edit(strategy, "import FedAdam, FedAvg, FedAvgM, FedProx", "import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi")
    edit(strategy, '    "fedprox": lambda cfg:', '    "fedyogi": lambda cfg: (FedYogi, dict(eta=cfg.server_learning_rate)),\n'
                                               '    "fedprox": lambda cfg:')
    edit(strategy, 'STATEFUL = ("fedavgm", "fedadam")', 'STATEFUL = ("fedavgm", "fedadam", "fedyogi")')


def add_knob(copy: Path) -> None:  # toy-scale: the value fedtoy sends
    edit(copy / "task/config.py", "    # Local training on each device\n",
         "    toy_scale: float = 0.0  # fedtoy: weight of its term in local training\n    # Local training on each device\n")
    edit(copy / "task/config.py", '        check("local-epochs",',
         '        check("toy-scale", self.toy_scale, self.toy_scale >= 0, "a number >= 0")\n        check("local-epochs",')
    edit(copy / "pyproject.toml", "\nlocal-epochs = ", "\ntoy-scale = 0.0                   # fedtoy: weight of its term\nlocal-epochs = ")


def add_strategy_with_term(copy: Path) -> None:
    strategy = copy / "server_app/strategy.py"
    edit(strategy, "\n\n# The server strategies by their", textwrap.dedent('''

        class FedToy(FedAvg):
            """FedAvg that sends toy-scale in every round's config: the devices add its term (task/train.py)."""

            def __init__(self, toy_scale: float = 0.0, **options):
                super().__init__(**options)
                self.toy_scale = toy_scale

            def configure_train(self, server_round, arrays, config, grid):
                config["toy-scale"] = self.toy_scale
                return super().configure_train(server_round, arrays, config, grid)
        ''').rstrip("\n") + "\n\n\n# The server strategies by their")
    edit(strategy, '    "fedprox": lambda cfg:', '    "fedtoy": lambda cfg: (FedToy, dict(toy_scale=cfg.toy_scale)),\n'
                                               '    "fedprox": lambda cfg:')
    train = copy / "task/train.py"
    edit(train, "    mu = float(round_config.get(PROXIMAL_MU, 0.0))\n",
         "    if float(round_config.get(TOY_SCALE, 0.0)) > 0:  # fedtoy's term\n"
         "        return _toy_loss(model, float(round_config[TOY_SCALE]))\n"
         "    mu = float(round_config.get(PROXIMAL_MU, 0.0))\n")
    append(train, textwrap.dedent('''

        TOY_SCALE = "toy-scale"  # fedtoy's key (server_app/strategy.py)
        _TOY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


        class ToyLoss(MaskedNextWordLoss):
            """The next-word loss plus toy-scale x ||w||^2 (the scale in a variable a round assigns)."""

            def __init__(self, model: tf.keras.Model):
                super().__init__()
                self._weights = model.trainable_weights
                self.scale = tf.Variable(0.0, trainable=False, dtype=tf.float32)

            def call(self, y_true, logits):
                term = tf.add_n([tf.reduce_sum(tf.square(w)) for w in self._weights])
                return super().call(y_true, logits) + self.scale * tf.cast(term, logits.dtype)


        def _toy_loss(model: tf.keras.Model, scale: float) -> ToyLoss:
            loss = _TOY.get(model)
            if loss is None:
                loss = _TOY[model] = ToyLoss(model)
            loss.scale.assign(scale)
            return loss
        '''))
    edit(copy / "task/releases.py", '        _v("proximal-mu", SERVER, PUBLIC,',
         '        _v("toy-scale", SERVER, PUBLIC, why="fedtoy\'s weight of its term"),\n        _v("proximal-mu", SERVER, PUBLIC,')


def add_data_source(copy: Path) -> None:
    partition = copy / "task/data/partition.py"
    edit(partition, "\n\n# Sources by their", textwrap.dedent('''

        def _toy_lines_pairs(data_path: str, notes: list[str]) -> Pairs:
            """A file of "person: sentence" lines, one unit per person."""
            for f in text_files(Path(data_path).expanduser()):
                for line in iter_file_lines(f, notes):
                    person, _, text = line.partition(":")
                    yield from ((person.strip(), s) for s in split_sentences(text))
        ''').rstrip("\n") + "\n\n\n# Sources by their")
    edit(partition, '"shakespeare": _shakespeare_pairs}', '"shakespeare": _shakespeare_pairs, "toy-lines": _toy_lines_pairs}')


def add_partitioner(copy: Path) -> None:
    partition = copy / "task/data/partition.py"
    edit(partition, "\n\n# Partitioners by their", textwrap.dedent('''

        def _round_robin(units: np.ndarray, names: list[str], num_partitions: int, seed: int) -> tuple[np.ndarray, int]:
            """Unit i (in name order) to device i mod N."""
            rank = {name: i for i, name in enumerate(sorted(names))}
            return np.array([rank[n] for n in names])[units] % num_partitions, min(num_partitions, len(names))
        ''').rstrip("\n") + "\n\n\n# Partitioners by their")
    edit(partition, '"size-skew": _size_skew}', '"size-skew": _size_skew, "round-robin": _round_robin}')


# README rows (by how their first cell starts) and the change that backs each, in the order made.
CHANGES = [("a model architecture", add_architecture), ("a server strategy (a Flower", add_plain_strategy),
           ("a config knob", add_knob), ("a server strategy with a device-side term", add_strategy_with_term),
           ("a data source", add_data_source), ("a partitioner", add_partitioner)]

PEOPLE = {"ann": "ann likes the sea and the boats", "bob": "bob reads books about old trains",
          "cyd": "cyd plants tomatoes in the garden"}

# In the copy: the config check, then ONE short run with every toy entry; then the folders row.
RUN = r"""
import json, sys
from pathlib import Path
import numpy as np
import client_app.app as client
import task.train as trainer
from scripts.local_superlink import app_run_config
from task.config import Config, ConfigError
from task.releases import published_value
from tests.helpers import SMALL_RC
from tests.inprocess import DirectGrid, run_inprocess

out, people = Path(sys.argv[1]), json.loads(sys.argv[2])
found = {}

# The config check accepts the toy names and refuses unknown ones, by the key.
refused = {}
base = Config().with_run_config({"data.path": str(out / "toy.txt")})
for key, name in (("model.architecture", "gru"), ("server-optimizer", "fedtoy"), ("server-optimizer", "fedyogi"),
                  ("data.source", "toy-lines"), ("data.partitioner", "round-robin")):
    base.with_run_config({key: name})
    try:
        base.with_run_config({key: name + "-nope"})
    except ConfigError as e:
        refused[key] = str(e)
found["refused"] = refused
found["fedyogi_keeps_state"] = base.with_run_config({"server-optimizer": "fedyogi"}).server_keeps_state
found["toy_scale_published"] = published_value("device config", "toy-scale") is not None

(out / "toy.txt").write_text("".join(f"{p}: {s} number {i}.\n" for i in range(40) for p, s in people.items()))
sent, losses, texts = [], [], {}

class RecordingGrid(DirectGrid):
    def push_messages(self, messages):
        messages = list(messages)
        sent.extend([m.metadata.message_type, dict(m.content["config"])] for m in messages
                    if "config" in m.content.config_records)
        return super().push_messages(messages)

def training_loss(model, round_config=trainer.NO_ROUND_CONFIG, _real=trainer.training_loss):
    loss = _real(model, round_config)
    losses.append([type(loss).__name__, round_config.get("toy-scale"), float(getattr(loss, "scale", np.nan))])
    return loss
trainer.training_loss = training_loss

def device_text(cfg, context, server_round, _real=client._device_text):
    text = _real(cfg, context, server_round)
    texts[context.node_id] = text.name
    return text
client._device_text = device_text

rc = {**app_run_config(Path(".")), **SMALL_RC, "num-server-rounds": 1, "local-epochs": 1, "model.architecture": "gru", "server-optimizer": "fedtoy",
      "toy-scale": 0.05, "data.source": "toy-lines", "data.path": str(out / "toy.txt"),
      "data.partitioner": "round-robin", "server-eval-devices": 0, "min-train-nodes": 3, "min-available-nodes": 3}
run = run_inprocess(out / "runs", 3, rc, grid=RecordingGrid(3, {**rc, "out-dir": str(out / "runs")}))
found.update(summary=run.summary, rows=run.rows, sent=sent, losses=losses, texts=texts)
found["not_publishable"] = sorted({k for _, c in sent for k in c if published_value("device config", k) is None})

# The term moves the update: one device's training from the same start, with and without it.
from task.data.device_text import load_device_text
from task.device import train_round
from task.model import build_model
cfg = Config.from_run_config(rc)
text = load_device_text(cfg, partition_id=0, num_partitions=3)
start = build_model(cfg.model).get_weights()
plain, _ = train_round(cfg, text, start, 1)
toy, _ = train_round(cfg, text, start, 1, round_config={"toy-scale": 0.05})
found["update_gap"] = float(sum(np.abs(a - b).sum() for a, b in zip(plain, toy)))

# No code: one folder per person, natural, in simulation: each device gets one person.
for person, sentence in people.items():
    (out / "people" / person / "notes").mkdir(parents=True)
    (out / "people" / person / "notes" / "a.txt").write_text("".join(f"{sentence} again {i}. " for i in range(20)))
folders = Config().with_run_config({"data.source": "folders", "data.path": str(out / "people"), "data.partitioner": "natural"})
found["folders"] = [load_device_text(folders, partition_id=i, num_partitions=3).name for i in range(3)]
print(json.dumps(found, default=str))
"""


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """One copy: every code row's change made in turn (each committed), then one run using them all."""
    tmp = tmp_path_factory.mktemp("fork")
    copy = tree_copy(tmp / "copy", git=True)
    table = fork_table(copy / "README.md")
    changed = {}
    for starts, change in CHANGES:
        change(copy)
        changed[starts] = changed_files(copy)
        commit(copy, starts)
    out = subprocess.run([sys.executable, "-c", RUN, str(tmp), json.dumps(PEOPLE)], cwd=copy, env=env(copy, tmp),
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return table, changed, json.loads(out.stdout.strip().splitlines()[-1])


def edits(table, starts: str) -> set[str]:
    names = files_named(row(table, starts)["edit"])
    assert names, f"the row {starts!r} names no file"
    return names


def test_an_architecture_is_one_builder_and_its_line_in_task_model(fork):
    table, changed, run = fork
    assert changed["a model architecture"] == edits(table, "a model architecture") == {"task/model.py"}
    assert "model.architecture" in run["refused"] and "gru" in run["refused"]["model.architecture"]
    assert run["summary"]["rounds"] == 1 and not run["summary"]["stopped_early"]
    assert run["summary"]["litert_check"]["float32"]["fit_to_ship"]  # the GRU keeps the contract, and ships


def test_a_flower_strategy_is_one_line_in_strategies(fork):
    table, changed, run = fork
    assert changed["a server strategy (a Flower"] == edits(table, "a server strategy (a Flower")
    assert run["fedyogi_keeps_state"]  # in STATEFUL: central DP, resume and discovery refuse it
    assert "fedtoy" in run["refused"]["server-optimizer"]


def test_a_strategy_with_a_device_side_term_and_its_knob(fork):
    table, changed, run = fork
    strategy = row(table, "a server strategy with a device-side term")
    assert changed["a config knob"] == edits(table, "a config knob") == files_named(strategy["and also"])
    assert changed["a server strategy with a device-side term"] == edits(table, "a server strategy with a device-side")
    assert run["toy_scale_published"] and run["not_publishable"] == []
    assert [c.get("toy-scale") for kind, c in run["sent"] if kind == "train"] == [0.05] * 3  # the server sent it ...
    trained = [entry for entry in run["losses"] if entry[1] is not None]
    assert trained and all(entry == ["ToyLoss", 0.05, pytest.approx(0.05)] for entry in trained)  # ... devices used it
    assert run["update_gap"] > 0  # and the term moves the update


def test_a_data_source_and_a_partitioner_are_lines_in_task_data_partition(fork):
    table, changed, run = fork
    assert changed["a data source"] == edits(table, "a data source") == {"task/data/partition.py"}
    assert changed["a partitioner"] == edits(table, "a partitioner") == {"task/data/partition.py"}
    assert {"data.source", "data.partitioner"} <= run["refused"].keys()
    texts = run["texts"]  # round-robin over three people: one each
    assert len(texts) == 3 and all("data.source=toy-lines" in t and "round-robin" in t for t in texts.values())
    assert sorted(t.split("round-robin: ")[1].rstrip(")") for t in texts.values()) == sorted(PEOPLE)
    assert run["rows"][-1]["train_replied"] == 3


def test_one_folder_per_person_needs_no_code(fork):
    table, _, run = fork
    assert files_named(row(table, "your own text, one folder per person")["edit"]) == set()
    assert sorted(name.split("natural: ")[1].rstrip(")") for name in run["folders"]) == sorted(PEOPLE)


def test_every_row_names_the_test_that_shows_it():
    for name, cells in fork_table().items():
        tests = re.findall(r"`(tests/[\w/.]+\.py)(?:::(\w+))?`", cells["shown by"])
        assert tests, f"the row {name!r} names no test"
        for path, test in tests:  # (tests/unit/test_doc_paths.py checks them too)
            assert (ROOT / path).exists() and (not test or f"def {test}(" in (ROOT / path).read_text()), (name, path, test)
