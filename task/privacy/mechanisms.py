"""The privacy mechanisms' rules, shared by the device, the server and the ledger: where secret
randomness comes from, how noise is calibrated, DP-SGD's public plan (what a device may send:
task/privacy/__init__.py).
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache

import dp_accounting
import numpy as np
from dp_accounting import rdp

from task.config import DPConfig


def secret_rng() -> np.random.Generator:
    """NumPy's `Generator` on a PCG64 bit generator, new at every call, seeded with a 128-bit
    integer from `secrets.randbits` (the OS's entropy source, os.urandom); NumPy's SeedSequence
    expands it into PCG64's 128-bit state and 128-bit increment, so a call gives one of 2**128
    streams. Anyone may know the run config and every library's global seed and still cannot
    predict, regenerate or subtract the noise. PCG64 is not a cryptographic generator: the
    secrecy rests on the 128-bit seed, not on PCG64 resisting prediction from its outputs."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def secret_tf_generator():
    """A TensorFlow Philox generator whose whole state (3 x 64 bits) comes from one 192-bit read of
    OS entropy (`secrets.randbits`).
    `tf.random.Generator.from_non_deterministic_state()` fills it from a process-wide mt19937_64
    seeded once with a 32-bit `std::random_device()`: about 2**32 possible noise streams per
    process, few enough for a server holding the update to try them all."""
    import tensorflow as tf  # only the mechanisms that draw on TensorFlow need it

    bits = secrets.randbits(192)  # one read of OS entropy for the whole state (check_fresh_noise counts reads)
    state = [(bits >> (64 * i) & (2**64 - 1)) - 2**63 for i in range(3)]  # three 64-bit words, as signed int64
    return tf.random.Generator.from_state(state, alg="philox")


@lru_cache(maxsize=32)
def local_noise_multiplier(target_epsilon: float, delta: float) -> float:
    """Noise std / sensitivity for one local-DP release whose RDP epsilon is `target_epsilon`.

    Flower's LocalDpMod uses the classic calibration sqrt(2 ln(1.25/delta)) / epsilon, which is
    only valid for epsilon < 1 and which the RDP accountant composing the releases rates
    differently (8.51 for a nominal 8); calibrating with the accountant makes them agree."""
    add_or_remove = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: rdp.RdpAccountant(neighboring_relation=add_or_remove), dp_accounting.GaussianDpEvent,
        target_epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)))


def adaptive_noise(dp: DPConfig, sampled: int) -> tuple[float, float]:
    """(noise multiplier on the update sum, noise std on the centred unclipped count).

    Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", Theorem 1: with
    centred bits (sensitivity 1/2) the count is a Gaussian mechanism of multiplier 2 x stddev,
    and both releases together equal one Gaussian mechanism of multiplier z when the update's
    multiplier is (z^-2 - (2 stddev)^-2)^-1/2."""
    stddev = dp.clipped_count_stddev or sampled / 20
    z = dp.noise_multiplier
    if z >= 2 * stddev:
        raise ValueError(f"dp.noise-multiplier {z} must be below 2 x clipped-count stddev = {2 * stddev:g}")
    return (z ** -2 - (2 * stddev) ** -2) ** -0.5, stddev


def dpsgd_steps(local_epochs: int, sampling_rate: float, max_local_steps: int = 0) -> int:
    """DP-SGD steps per round: `local_epochs` expected passes at the public sampling rate.
    The same for every device, so the server can account a device without hearing from it."""
    steps = math.ceil(local_epochs / sampling_rate - 1e-9)
    return min(steps, max_local_steps) if max_local_steps > 0 else steps


# --- BLT-DP-FTRL: buffered linear Toeplitz matrix factorisation (dp.mode = "central-blt") ----------
# The server releases prefix sums of the rounds' clipped sums x through A = B C (A: the lower-triangular
# ones), adding noise to C x: the model after round t carries (A C^-1 z)_t, z ~ N(0, (z_mult clip)^2)
# i.i.d. per round and weight (Denisov et al. 2022; Choquette-Choo et al. 2023 for several
# participations; Dvijotham, McMahan et al. 2024 for the buffered Toeplitz C and its streaming noise;
# McMahan et al. 2024, "BLT-DP-FTRL"). C is lower-triangular Toeplitz with coefficients
#     c_0 = 1,   c_k = sum_i omega_i theta_i^(k-1)  (k >= 1),   0 <= theta_i < 1, omega_i >= 0, sum omega <= 1,
# so c is nonnegative and non-increasing. As power series, C(x) = Q(x) / P(x) with
# P(x) = prod_i (1 - theta_i x) and Q(x) = P(x) + x sum_i omega_i prod_{j != i} (1 - theta_j x): C, C^-1
# and B = A C^-1 are linear recursions of order d, computed here in O(n d) (scipy.signal.lfilter).
#
# Why not jax-privacy (Google's implementation, matrix_factorization.buffered_toeplitz): version 2.0
# needs jax, jaxlib (an 85 MB wheel, 357 MB installed), optax, chex and pydantic, a second array
# framework in the server's process beside TensorFlow and float64 as a global jax flag, for what is
# here a few recursions and one small L-BFGS-B problem on scipy (already installed: dp-accounting
# depends on it). Written here from the papers' definitions; nothing is copied.
BLT_BUFFERS = 4  # d: buffers of the model's size the server keeps (Dvijotham et al.: 3-5 suffice)


def _blt_polynomials(theta, omega) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) above, coefficients in ascending powers of x (np.poly's list read that way)."""
    theta, omega = np.asarray(theta, np.float64), np.asarray(omega, np.float64)
    p = np.poly(theta) if theta.size else np.ones(1)
    q = p.copy()
    for i in range(theta.size):
        others = np.poly(np.delete(theta, i)) if theta.size > 1 else np.ones(1)
        q[1:1 + others.size] += omega[i] * others
    return p, q


def blt_coefficients(theta, omega, rounds: int) -> np.ndarray:
    """c_0 .. c_(rounds-1): the first column of C (the strategy matrix)."""
    from scipy.signal import lfilter

    p, q = _blt_polynomials(theta, omega)
    return lfilter(q, p, np.eye(1, rounds).ravel())


def _check_blt(theta, omega) -> None:
    theta, omega = np.asarray(theta, np.float64), np.asarray(omega, np.float64)
    if np.any(theta < 0) or np.any(theta >= 1) or np.any(omega < 0) or omega.sum() > 1 + 1e-12:
        raise ValueError("BLT parameters outside 0 <= theta < 1, omega >= 0, sum(omega) <= 1: C's coefficients "
                         "are then not nonnegative and non-increasing, and the worst pattern is not {0, b, 2b, ...}")


def _column_sum(p, q, rounds: int, separation: int) -> np.ndarray:
    from scipy.signal import lfilter

    pattern = np.zeros(rounds)
    pattern[::max(1, int(separation))] = 1.0
    return lfilter(q, p, pattern)  # C 1_pattern, pattern = {0, b, 2b, ...}


def blt_sensitivities(theta, omega, rounds: int, separation: int) -> np.ndarray:
    """sens(C_t; b) for t = 1..rounds: the largest L2 norm of the sum of the columns of C_t (C's first
    t rows and columns) a device can touch when it takes part at most once every `separation` (b)
    rounds. For a lower-triangular Toeplitz C with nonnegative, non-increasing coefficients every
    entry of C^T C is nonnegative, so updates in one direction are the worst, and (C^T C)_ij falls
    as max(i, j) grows (fewer terms) and as |i - j| grows (c non-increasing): the pattern
    {0, b, 2b, ...} (earliest rounds, smallest gaps, most participations: k = ceil(t / b)) is the
    worst, and C's first t rows touch only the first t columns, so one pass gives every prefix."""
    _check_blt(theta, omega)
    return np.sqrt(np.cumsum(_column_sum(*_blt_polynomials(theta, omega), rounds, separation) ** 2))


def _prefix_errors(p, q, rounds: int) -> np.ndarray:
    from scipy.signal import lfilter

    inverse = lfilter(p, q, np.eye(1, rounds).ravel())  # C^-1's first column
    return np.cumsum(np.cumsum(inverse) ** 2)


def blt_prefix_errors(theta, omega, rounds: int) -> np.ndarray:
    """||B_t||^2 for t = 1..rounds, B = A C^-1: the variance of the noise on the running sum after t
    rounds, in units of the per-round noise variance (B is Toeplitz; its coefficients are the
    running sums of C^-1's)."""
    return _prefix_errors(*_blt_polynomials(theta, omega), rounds)


def _loss(p, q, rounds: int, separation: int, loss: str) -> float:
    errors = _prefix_errors(p, q, rounds)
    spread = errors.max() if loss == "max" else errors.mean()
    return float(np.sum(_column_sum(p, q, rounds, separation) ** 2) * spread)


def blt_loss(theta, omega, rounds: int, separation: int, loss: str = "max") -> float:
    """The error at equal privacy: sens(C; b)^2 x the max (or mean) over t of ||B_t||^2. The noise
    a given epsilon needs scales with the sensitivity, so this is the variance of the noise on the
    running sum (worst round, or averaged over rounds) per unit of squared noise multiplier."""
    _check_blt(theta, omega)
    return _loss(*_blt_polynomials(theta, omega), rounds, separation, loss)


def _blt_unpack(params: np.ndarray, buffers: int) -> tuple[np.ndarray, np.ndarray]:
    theta = 1 / (1 + np.exp(-np.clip(params[:buffers], -50, 50)))  # in (0, 1)
    theta = np.minimum(theta, 1 - 1e-12)
    weights = np.exp(np.clip(params[buffers:], -50, 50))
    return theta, weights / (1 + weights.sum())  # omega > 0, sum(omega) < 1


@lru_cache(maxsize=64)
def optimal_blt(rounds: int, separation: int, buffers: int = BLT_BUFFERS,
                loss: str = "max") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(theta, omega) of the BLT minimising `blt_loss` for `rounds` rounds and minimum separation
    `separation`: L-BFGS-B on log(loss) over unconstrained parameters (theta_i = sigmoid(a_i),
    omega = softmax-like with sum < 1), from three deterministic starts (decays spread
    geometrically between 1 and 1 - 1/rounds). Never worse than independent noise every round
    (omega = 0, C = I: DP-FedAvg without amplification), which it returns when that is better.
    Deterministic: the server, the ledger and a plan get the same parameters."""
    from scipy.optimize import minimize

    rounds, separation = max(1, int(rounds)), max(1, int(separation))
    def objective(params: np.ndarray) -> float:
        value = _loss(*_blt_polynomials(*_blt_unpack(params, buffers)), rounds, separation, loss)
        return math.log(value) if value > 0 and math.isfinite(value) else 1e6

    best_params, best = None, math.inf
    for start in range(3):
        horizons = np.logspace(0, math.log10(max(rounds, 2)), buffers + 2)[1:-1] * 1.5**start
        theta = 1 - 1 / horizons
        params = np.concatenate([np.log(theta / (1 - theta)), np.full(buffers, math.log(0.5 / buffers))])
        result = minimize(objective, params, method="L-BFGS-B")
        if result.fun < best:
            best_params, best = result.x, float(result.fun)
    theta, omega = _blt_unpack(best_params, buffers)
    independent = blt_loss(np.zeros(buffers), np.zeros(buffers), rounds, separation, loss)
    if not math.exp(best) < independent:
        theta, omega = np.zeros(buffers), np.zeros(buffers)
    return tuple(float(t) for t in theta), tuple(float(w) for w in omega)


def min_separation(population: int, selected: int) -> int:
    """BLT-DP-FTRL's minimum separation b: a device takes part at most once every b rounds. The
    largest b the server can always keep when the whole population is connected: floor(population
    / devices asked per round) (b - 1 rounds exclude at most (b - 1) x selected devices, leaving at
    least `selected`)."""
    return max(1, int(population) // max(1, int(selected)))
