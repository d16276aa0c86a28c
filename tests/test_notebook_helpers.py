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


@pytest.mark.parametrize("display", [True, False])
@pytest.mark.parametrize("value", [0.973, "about 50 s", {"seen": 0.9, "held-out": 0.8}])
def test_glue_writes_what_myst_nb_glue_writes(monkeypatch, display, value):
    """mmlib records glued values itself (importing MyST-NB's glue costs a second per chapter):
    the displayed bundle and its metadata must be exactly MyST-NB's, or the build loses them."""
    myst_glue = pytest.importorskip("myst_nb.ext.glue")
    ours, theirs = [], []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: ours.append((a, k)))
    monkeypatch.setattr(myst_glue, "ipy_display", lambda *a, **k: theirs.append((a, k)))
    notebook._record("fused_acc", value, display=display)
    myst_glue.glue("fused_acc", value, display=display)
    assert ours == theirs and len(ours) == 1
    assert notebook._myst_glue is notebook._record, "with MyST-NB installed, glue records"


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
def test_table_shows_rows_as_a_rendered_table_with_formatted_numbers():
    shown = notebook.table({"film": {"accuracy": 0.97412, "parameters": 12345}, "late": {"accuracy": 0.5}})
    frame = shown.data
    assert list(frame.index) == ["film", "late"] and list(frame.columns) == ["accuracy", "parameters"]
    html = shown.to_html()
    assert "<table" in html and "0.974" in html and "12,345" in html and "0.97412" not in html
    from_list = notebook.table([{"k": 1, "acc": 0.5}, {"k": 64, "acc": 0.9}], index="k")
    assert list(from_list.data.index) == [1, 64]
    with pytest.raises(ValueError, match="no column 'shots'"):
        notebook.table([{"k": 1}], index="shots")
    with pytest.raises(ValueError, match="at least one row"):
        notebook.table({})


def test_recipe_table_shows_every_field_nested_ones_by_path():
    from mmlib.recipes import DESCRIBER, DESCRIBER_LORA

    frame = notebook.recipe_table(full=DESCRIBER, lora=DESCRIBER_LORA).data
    assert list(frame.columns) == ["full", "lora"]
    assert frame.loc["lora_rank", "lora"] == "4" and frame.loc["lora_rank", "full"] == "0"
    assert frame.loc["optim.lr", "lora"] == "0.01" and frame.loc["lm.steps", "full"] == "200"
    assert frame.loc["connector_options", "full"] == "pool=2" and frame.loc["questions", "full"] == "20,000"
    with pytest.raises(ValueError, match="recipes by name"):
        notebook.recipe_table(x=3)
