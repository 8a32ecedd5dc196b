"""What the privacy docs and the run record say must be what the code does (issue 32, items 10-11;
the outside DP review's B2, O8, O10, C1): each check here failed on the text or labels it replaced."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from server_app.console import privacy_line
from task.config import DPConfig
from task.privacy import ledger as ledger_module
from task.privacy import mechanisms
from task.privacy.ledger import PrivacyLedger

ROOT = Path(__file__).resolve().parents[2]
PRIVACY = (ROOT / "docs" / "privacy.md").read_text()
DISCOVERY = (ROOT / "docs" / "vocabulary-discovery.md").read_text()
README = (ROOT / "README.md").read_text()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_unit_of_privacy_is_stated_as_a_device_key_with_the_deployers_duty():
    for text in (PRIVACY, README):
        assert "one key per person" in text.lower()
    assert "supernode register" in PRIVACY and "unregister" in PRIVACY


def test_dp_ftrl_is_never_labelled_add_or_remove():
    ftrl = PrivacyLedger(DPConfig(mode="central-ftrl"), population=9, sampled=3)
    assert "added or removed" not in ftrl.assumptions(12)[0] and "replaced by zero" in ftrl.assumptions(12)[0]
    line = privacy_line({"dp_mode": "central-ftrl", "epsilon_central": 1.0, "delta": 1e-5})
    assert "add/remove" not in line and "replaced by zero" in line


ZERO_OUT = ("one device's update replaced by zero (its votes empty); whether it replied is not protected (the number "
            "of devices and their reply status are public)")
OLD_ZERO_OUT = "text replaced by none"  # outside DP review R1: a device with no text fails, and that is published


def test_the_plain_central_figure_and_the_total_with_discovery_are_labelled_zero_out_everywhere():
    """B2: `sampled` comes from the population, an added device displaces a sampled one and the
    counts are published, so add/remove one device does not hold; the figures are zero-out. R1: what
    the mechanism bounds is one device's update replaced by zero, its reply status unchanged (a
    device with no text fails, "too little text", in train_failed and failures): every label, the
    README, docs/privacy.md and docs/vocabulary-discovery.md say so, never "text replaced by none"."""
    line = privacy_line({"dp_mode": "central-client-clip", "epsilon_central": 1.0, "epsilon_discovery": 2.0,
                         "epsilon_with_discovery": 3.0, "delta": 1e-5, "delta_with_discovery": 2e-5})
    central, total = line.split(" = ")[0], line.split("together")[1].split(" = ")[0]
    assert "zero-out" in central and ZERO_OUT in central and "add/remove" not in central
    assert "zero-out" in total and ZERO_OUT in total and "add/remove" not in total
    assert ZERO_OUT in privacy_line({"dp_mode": "central-ftrl", "epsilon_central": 1.0, "delta": 1e-5})
    assert OLD_ZERO_OUT not in line
    assert "discovery (TrieHH, add/remove one device) = 2.000" in line  # TrieHH's own theorem is add/remove
    for mode in ("central-client-clip", "central-server-clip", "central-adaptive-clip", "central-ftrl"):
        first = PrivacyLedger(DPConfig(mode=mode, clipped_count_stddev=5.0), population=9, sampled=3).assumptions(12)[0]
        assert "zero-out" in first and "number of devices is public" in first and "added or removed" not in first
        assert "whether it replied is not protected (the number of devices and their reply status are public" in first
        assert OLD_ZERO_OUT not in first
    assert ledger_module.ZERO_OUT == ZERO_OUT and OLD_ZERO_OUT not in flat(ledger_module.__doc__)
    assert ZERO_OUT in flat(ledger_module.__doc__)
    text = flat(PRIVACY)
    assert "Neighbouring relation: add or remove one device" not in text
    assert "both under add or remove one device" not in text
    for doc in (PRIVACY, DISCOVERY, README):
        assert ZERO_OUT in flat(doc.replace("**", "")) and OLD_ZERO_OUT not in flat(doc)
    assert "under one neighbouring relation, add or remove one device" not in flat(DISCOVERY)
    assert "too little text" in text and "`train_failed`" in text  # why the reply status is not protected


def test_the_window_level_figure_says_discovery_is_not_in_it_and_why():
    """O8: a discovery spends privacy of every window too; the DP-SGD statement must say it is left out."""
    sgd = PrivacyLedger(DPConfig(sgd=True), population=9, sampled=3).assumptions(12)
    dpsgd_line = next(line for line in sgd if line.startswith("sample level"))
    assert "Vocabulary discovery is not in it" in dpsgd_line and "without noise" in dpsgd_line
    assert "discovery not in it" in privacy_line({"epsilon_sample": 1.0, "epsilon_discovery": 2.0, "delta": 1e-5})
    assert "no window-level total with discovery is reported" in flat(PRIVACY)


def test_the_readme_headline_epsilon_names_its_relation_sampling_credit_and_delta():
    """O10: "ε = 10 is 1.00× of non-private" is DP-FedAvg's replace-one figure with the server's
    secret sample credited, at δ = 1e-5."""
    status = flat(README.split("## Status")[1])
    headline = status[:status.index("1.00× of non-private")]
    assert "replace-one" in headline and "sample credited" in headline and "δ = 1e-5" in headline
    privacy = flat(README.split("## Privacy")[1].split("## ")[0])
    at_ten = privacy[privacy.index("non-private at ε = 10"):][:120]
    assert "replace-one" in at_ten and "δ = 1e-5" in at_ten


def test_secret_rng_is_what_the_docs_say_pcg64_seeded_with_128_bits_of_os_entropy(monkeypatch):
    """C1: secret_rng is NumPy's Generator on PCG64, seeded with secrets.randbits(128) through
    SeedSequence; DP-SGD's and DP-FTRL's noise come from Philox, not PCG64."""
    asked = []

    def randbits(k):
        asked.append(k)
        return 12345

    monkeypatch.setattr(secrets, "randbits", randbits)
    rng = mechanisms.secret_rng()
    assert asked == [128] and isinstance(rng.bit_generator, np.random.PCG64)
    assert rng.bit_generator.seed_seq.entropy == 12345
    assert rng.bit_generator.state == np.random.PCG64(np.random.SeedSequence(12345)).state
    text = flat(PRIVACY)
    assert "`SeedSequence` expands into PCG64's 128-bit state and increment" in text
    assert "Noise is drawn in floating point from NumPy's PCG64 seeded from OS entropy" not in text  # not all of it
    assert "DP-SGD's and DP-FTRL's noise from `secret_tf_generator`" in text


def test_the_docs_no_longer_promise_what_the_code_does_not_do():
    text = flat(PRIVACY)
    assert "Not covered: secure aggregation" not in text  # it is covered (features/secagg/server.py)
    assert "asks exactly the sampled number" not in text  # over-selection asks `selected`
    assert "of `population` devices" not in text  # the sample is out of those connected that round
    assert "from_non_deterministic_state`)," not in text  # no longer a source of secret randomness
