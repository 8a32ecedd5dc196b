"""scripts/benchmarks/benchmark_privacy.py --data wikitext: the population it builds and plans for,
without running Flower (a synthetic WikiText-shaped pair of files; the project never reads ../shared)."""

import argparse

import pytest

from scripts.benchmarks import benchmark_privacy as bench

WIKI = " \n = Article {n} = \n \n One of {n} . Two of {n} . \n Lone {n} . \n \n = = Part = = \n \n Three . Four . \n"


def _files(tmp_path):
    for name, n in (("valid.txt", "v"), ("test.txt", "t")):
        (tmp_path / name).write_text(WIKI.format(n=n))
    return [tmp_path / "valid.txt", tmp_path / "test.txt"]


def test_missing_wikitext_files_stop_with_a_message_naming_them(tmp_path):
    args = argparse.Namespace(wikitext=[tmp_path / "valid.txt", tmp_path / "test.txt"])
    with pytest.raises(SystemExit, match=r"valid\.txt does not exist.*--wikitext VALID TEST"):
        bench.wikitext_folder(args, tmp_path / "work")


def test_the_population_is_one_device_per_paragraph(tmp_path):
    folder = bench.wikitext_folder(argparse.Namespace(wikitext=_files(tmp_path)), tmp_path / "work")
    assert bench.wikitext_folder(argparse.Namespace(wikitext=_files(tmp_path)), tmp_path / "work") == folder  # rerun
    devices = bench.paragraph_devices(folder)
    # per file: "one two", then the lone sentence merged into the next paragraph of its article
    # (a section heading does not end the article); test.txt first, as files are sorted
    assert [[" ".join(s) for s in v] for v in devices.values()][:2] == [["one of t", "two of t"],
                                                                        ["lone t", "three", "four"]]
    assert [len(s) for s in devices.values()] == [2, 3, 2, 3]


def test_an_emulated_cohort_of_real_text_is_planned_at_the_real_population():
    from server_app.privacy_plan import noise_for_epsilon
    from task.config import DPConfig

    args = argparse.Namespace(clip=1.5, delta=1e-6, population=3597, per_round=[200], rounds=20, epsilons=[10.0],
                              modes=["central-client-clip"], emulate=[400], emulated_only=True, data="wikitext")
    rows = bench.plan(args)
    assert [(r.mode, r.emulated_per_round) for r in rows] == [("none", None), ("central-client-clip", 400)]
    z400 = noise_for_epsilon(DPConfig(mode="central-client-clip", clipping_norm=1.5, delta=1e-6), 3597, 400, 20, 10.0)
    assert rows[1].noise_multiplier == pytest.approx(z400 * 200 / 400)  # the same noise on the average as 400
