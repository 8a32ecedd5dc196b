"""End to end: a new word enters the language mid-run, the federation discovers it privately
(TrieHH query rounds), the model grows a row for it and learns to suggest it to users who never
typed it; the exported on-device model suggests it too (README: "New words")."""

import json

from scripts.local_flower import run_app
from task.litert.suggest import Suggester

# The scenario of docs/vocabulary-discovery.md to round 14: 1,000 built-in devices, half of them
# start typing "zorbix" at round 3; discovery before rounds 1, 3, 5, ...; 40 devices train per round.
# Which devices a round draws changes from run to run (Flower's node ids), and with it the round at
# which the word enters the top 3 (round 8 to 10 in four in-process runs with different draws),
# and twice a run stopped at round 10 was still below the goal (25%, 31%). 14 rounds leave a margin.
SCENARIO = ('discovery.new-word="zorbix" discovery.new-word-adopters=0.5 discovery.new-word-from-round=3 discovery.enabled=true '
            "discovery.every=2 num-server-rounds=14 fraction-train=0.04 min-train-nodes=40 "
            "min-available-nodes=1000 evaluate-in-train=false fraction-evaluate=0.002 min-evaluate-nodes=2 "
            "server-eval-devices=5 keep-checkpoints=1")


def test_a_word_half_the_devices_start_typing_is_discovered_and_suggested_to_the_others(flower, tmp_path):
    outcome = run_app(flower, num_supernodes=1000, echo=False, timeout=2400,
                      run_config=f'{SCENARIO} out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    run_dir = tmp_path / f"run-{outcome.run_id}"
    rows = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in rows] == list(range(15))
    # Before round 3 nobody typed it: the first discovery found nothing and the word cannot be suggested.
    first, second = summary["discoveries"][:2]
    assert (first["round"], first["words"], second["round"], second["words"]) == (1, [], 3, ["zorbix"])
    assert summary["vocab_added"] == ["zorbix"]  # the built-in text has no other word outside the dictionary
    for r in rows[:3]:
        assert r["server_new_word_top3_late_adopters"] == r["server_new_word_top3_unseen_users"] == 0.0
    # The goal: after discovery and training, suggested in >= 50% of its contexts to devices
    # and users that never typed it.
    last = rows[-1]
    assert last["server_new_word_top3_late_adopters"] >= 0.5, [r["server_new_word_top3_late_adopters"] for r in rows]
    assert last["server_new_word_top3_unseen_users"] >= 0.5
    # Its epsilon: its own ledger line, every discovery's levels added up.
    spent = sum(d["epsilon"] for d in summary["discoveries"])
    assert abs(last["dp_epsilon_discovery"] - spent) < 1e-9 and 0 < spent < len(summary["discoveries"]) * 8.0
    assert any("vocabulary discovery (TrieHH)" in line for line in summary["privacy_assumptions"])
    # The model the devices run offline has the word and suggests it.
    vocab = json.loads((run_dir / "final" / "litert" / "vocab.json").read_text())["words"]
    assert vocab[-1] == "zorbix" and len(vocab) == 8001
    suggester = Suggester.from_files(run_dir / "final" / "litert" / "model-float32.tflite")
    assert "zorbix" in [s.word for s in suggester.suggest("Did you see my message on")]
