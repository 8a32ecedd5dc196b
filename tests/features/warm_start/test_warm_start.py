"""Warm start without Flower: scripts/tools/pretrain.py writes a checkpoint of the model trained on proxy
text, and `warm-start.init-from` starts a run from it only if the model shape and vocabulary match (end to
end: tests/features/warm_start/test_warm_start_run.py)."""

import numpy as np
import pytest

from features.warm_start.server import initial_weights
from scripts.tools.pretrain import pretrain
from task.config import Config, ConfigError, ModelConfig
from task.data import personas
from task.data.vocab import default_vocabulary
from task.run.checkpoint import load_checkpoint, model_fingerprint
from tests.helpers import SMALL_MODEL

SMALL = Config(model=SMALL_MODEL)
SMALL_OVERRIDES = "model.vocab-size=2000 model.seq-len=10 model.embed-dim=16 model.num-heads=2 model.ffn-dim=32"


def fingerprint(cfg: Config) -> dict:
    return model_fingerprint(cfg, default_vocabulary(cfg.model.vocab_size).words)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy")
    proxy = root / "proxy.txt"
    proxy.write_text("\n".join(personas.device_sentences(5_000_000, 400)))
    out = root / "pretrained.npz"
    info = pretrain(proxy, 0, out, epochs=2, max_sentences=0, overrides=SMALL_OVERRIDES)
    return out, info


def test_pretraining_learns_the_proxy_and_writes_a_checkpoint_a_run_can_start_from(pretrained):
    out, info = pretrained
    assert info["windows"] > 100 and info["epochs"] in (1, 2)
    # far better than chance on held-out proxy text (1/2000 per guess): the weights are trained
    assert info["held_out_top3"] > 0.15 and info["held_out_loss"] < np.log(2000) - 1
    cfg = SMALL.with_run_config({"warm-start.init-from": str(out)})
    weights, origin = initial_weights(cfg, fingerprint(cfg))
    assert "pretrained on" in origin and str(out) in origin
    for a, b in zip(weights, load_checkpoint(out).weights):
        np.testing.assert_array_equal(a, b)


def test_init_from_refuses_another_model_shape_vocabulary_or_a_missing_file(pretrained, tmp_path):
    out, _ = pretrained
    wider = Config(model=ModelConfig(vocab_size=2000, seq_len=10, embed_dim=32, num_heads=2, ffn_dim=32)).with_run_config(
        {"warm-start.init-from": str(out)})
    with pytest.raises(ConfigError, match=r"'warm-start.init-from'.*different model shape.*'embed_dim': \(16, 32\)"):
        initial_weights(wider, fingerprint(wider))
    cfg = SMALL.with_run_config({"warm-start.init-from": str(out)})
    other_words = fingerprint(cfg) | {"vocab_sha256": "0" * 64}
    with pytest.raises(ConfigError, match="'warm-start.init-from'.*different vocabulary"):
        initial_weights(cfg, other_words)
    missing = SMALL.with_run_config({"warm-start.init-from": str(tmp_path / "nope.npz")})
    with pytest.raises(ConfigError, match="'warm-start.init-from'.*no such checkpoint"):
        initial_weights(missing, fingerprint(missing))
    (tmp_path / "broken.npz").write_bytes(b"not a checkpoint")
    broken = SMALL.with_run_config({"warm-start.init-from": str(tmp_path / "broken.npz")})
    with pytest.raises(ConfigError, match="'warm-start.init-from'.*damaged"):
        initial_weights(broken, fingerprint(broken))


def test_init_from_and_resume_from_together_are_refused():
    with pytest.raises(ConfigError, match="'warm-start.init-from'"):
        Config(resume_from="runs/run-1").with_run_config({"warm-start.init-from": "a.npz"})


def test_under_dp_only_a_model_pretrained_on_proxy_text_may_start_a_run(pretrained, tmp_path):
    """A new private run's epsilon starts at 0: a checkpoint of an earlier federated run on the same
    fleet would carry its exposure of the devices unaccounted."""
    from task.config import DPConfig
    from task.run.checkpoint import Checkpoint, save_checkpoint

    out, _ = pretrained
    federated = tmp_path / "round-005.npz"
    save_checkpoint(federated, Checkpoint(round=5, weights=load_checkpoint(out).weights,
                                          state={"fingerprint": fingerprint(SMALL)}))
    for private in (SMALL.replace(dp=DPConfig(mode="central-client-clip")), SMALL.replace(dp=DPConfig(sgd=True)),
                    SMALL.with_run_config({"discovery.enabled": True})):
        with pytest.raises(ConfigError, match="'warm-start.init-from'.*round 5 of a federated run.*resume-from"):
            initial_weights(private.with_run_config({"warm-start.init-from": str(federated)}), fingerprint(private))
        weights, origin = initial_weights(private.with_run_config({"warm-start.init-from": str(out)}), fingerprint(private))
        assert "pretrained on" in origin
    assert "round 5" in initial_weights(SMALL.with_run_config({"warm-start.init-from": str(federated)}), fingerprint(SMALL))[1]  # no DP: fine
