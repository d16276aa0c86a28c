"""mmlib.train and mmlib.notebook: seeding, device, setup and glue."""

import os
import random

import numpy as np
import pytest
import torch

import mmlib
import mmlib.notebook as notebook
from mmlib.train import default_device, seed_everything


def draw():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_same_seed_same_numbers_and_different_seed_different_numbers():
    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(bad)


def test_setup_returns_the_device_and_prints_versions(capsys):
    device = mmlib.setup(seed=0)
    assert device == default_device()
    out = capsys.readouterr().out
    assert torch.__version__ in out and mmlib.__version__ in out


def test_glue_without_myst_nb_shows_the_value(monkeypatch):
    shown = []
    monkeypatch.setattr(notebook, "_myst_glue", None)
    monkeypatch.setattr("IPython.display.display", lambda value: shown.append(value))
    assert notebook.glue("fused_acc", 0.97) is None  # nothing echoed as a cell's last value
    assert shown == [0.97]
    notebook.glue("hidden", 1, display=False)
    assert shown == [0.97]


def test_glue_with_myst_nb_records_the_value(monkeypatch):
    recorded = []
    monkeypatch.setattr(notebook, "_myst_glue", lambda name, value, display: recorded.append((name, value, display)))
    notebook.glue("n_events", 35, display=False)
    assert recorded == [("n_events", 35, False)]


@pytest.mark.parametrize("name", ["fused acc", "", "1st", None])
def test_glue_names_must_be_identifiers(name):
    with pytest.raises(ValueError, match="identifiers"):
        notebook.glue(name, 1)


def test_thread_choice_respects_the_machine_and_the_override(monkeypatch):
    from mmlib.notebook import busy_cpus, choose_threads

    assert 0 <= busy_cpus(0.05) <= (os.cpu_count() or 1) + 0.5
    monkeypatch.setattr(notebook, "busy_cpus", lambda interval=0.25: 0.0)
    assert choose_threads() == len(os.sched_getaffinity(0)), "an idle machine: every core"
    monkeypatch.setattr(notebook, "busy_cpus", lambda interval=0.25: 100.0)
    assert choose_threads() == 1, "a busy machine: one thread, never zero"
    monkeypatch.setenv("MMLIB_THREADS", "3")
    assert choose_threads() == 3
    monkeypatch.setenv("MMLIB_THREADS", "many")
    with pytest.raises(ValueError, match="positive whole number"):
        choose_threads()


def test_seed_spread_is_shipped_and_explains_unknown_claims(capsys):
    from mmlib.notebook import print_spread, seed_spread

    rows = seed_spread("transfer")
    row = rows["sketch lp_ft k=64"]
    assert len(row["values"]) >= 3 and row["std"] >= 0
    assert abs(row["mean"] - sum(row["values"]) / len(row["values"])) < 1e-3
    with pytest.raises(KeyError, match="benchmarks/seeds.py"):
        seed_spread("no such claim")
    print_spread("lit", {"locked": 0.5})
    lines = capsys.readouterr().out.splitlines()
    assert "this run" in lines[0] and len(lines) == 2 and "0.500" in lines[1]
    with pytest.raises(KeyError, match="has no rows"):
        print_spread("lit", names=["nope"])


def test_beats_needs_a_gap_wider_than_both_spreads(monkeypatch):
    import mmlib.notebook as notebook

    rows = {"a": {"mean": 0.90, "std": 0.02}, "b": {"mean": 0.85, "std": 0.02},
            "c": {"mean": 0.80, "std": 0.01}}
    monkeypatch.setattr(notebook, "seed_spread", lambda claim: rows)
    assert notebook.beats("x", "a", "c")          # gap 0.10 > 0.03
    assert notebook.beats("x", "a", "b")          # gap 0.05 > 0.04
    rows["b"]["std"] = 0.04                       # gap 0.05 < 0.06: a tie
    assert not notebook.beats("x", "a", "b") and not notebook.beats("x", "b", "a")
    assert not notebook.beats("x", "c", "a")      # a loss is not a win
    with pytest.raises(KeyError, match="has no rows"):
        notebook.beats("x", "a", "nope")


def test_every_chapter_claim_has_its_seed_spread():
    """The benchmark's table covers every claim the chapters print."""
    import json
    import re
    from pathlib import Path

    from mmlib.notebook import seed_spread

    book = Path(__file__).resolve().parents[1] / "book"
    claims = {m for nb in book.glob("*.ipynb")
              for m in re.findall(r'(?:print_spread|seed_spread|beats)\(\\?"(\w+)', nb.read_text())}
    assert claims >= {"fusion", "transfer", "lit"}
    for claim in claims:
        assert seed_spread(claim)
