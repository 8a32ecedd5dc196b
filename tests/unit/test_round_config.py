"""The server's round config reaches local training (FedProx's proximal-mu as the worked example),
and a changed loss is never ignored by Keras's traced train step."""

import numpy as np

from task.model import build_model
from task.train import PROXIMAL_MU, train
from tests.unit.test_model_train import SMALL, toy_windows


def _trained(model, round_config=None, seed=3):
    x, y = toy_windows(64, seed=1)
    kwargs = {} if round_config is None else {"round_config": round_config}
    train(model, x, y, epochs=2, batch_size=16, learning_rate=0.05, seed=seed, score=False, **kwargs)
    return model.get_weights()


def _distance(a, b):
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b))))


def test_mu_zero_is_plain_training_to_the_bit():
    plain = _trained(build_model(SMALL, seed=0))
    with_zero = _trained(build_model(SMALL, seed=0), {PROXIMAL_MU: 0.0, "server-round": 1})
    assert all(np.array_equal(a, b) for a, b in zip(plain, with_zero))


def test_the_proximal_term_keeps_the_update_nearer_the_global_model():
    start = build_model(SMALL, seed=0).get_weights()
    plain = _trained(build_model(SMALL, seed=0))
    prox = _trained(build_model(SMALL, seed=0), {PROXIMAL_MU: 5.0})
    assert not all(np.array_equal(a, b) for a, b in zip(plain, prox))
    # FedProx's point (Li et al. 2020): the local model stays closer to where the round began
    assert _distance(prox, start) < 0.8 * _distance(plain, start)


def test_a_cached_model_never_trains_with_the_loss_it_was_traced_with_after_the_loss_changes():
    # A device reuses one compiled model across rounds (task.device.worker_model). Keras caches the
    # traced train step: unless the model is compiled again, an added loss term would be ignored.
    reused = build_model(SMALL, seed=0)
    start = reused.get_weights()
    _trained(reused)  # traces the plain step
    reused.set_weights(start)
    after_change = _trained(reused, {PROXIMAL_MU: 5.0})
    fresh = _trained(build_model(SMALL, seed=0), {PROXIMAL_MU: 5.0})
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(after_change, fresh))
    # and back: a new mu, then none, each as a fresh model would train
    reused.set_weights(start)
    again = _trained(reused, {PROXIMAL_MU: 0.5})
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(again, _trained(build_model(SMALL, seed=0), {PROXIMAL_MU: 0.5})))
    reused.set_weights(start)
    plain = _trained(reused)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(plain, _trained(build_model(SMALL, seed=0))))
