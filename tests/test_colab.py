"""A simulated Colab: another torch already installed, no [book] extra, no MyST-NB.

Colab ships its own torch, torchvision and numpy, and runs a chapter's first cell, which
pip-installs mmlib when it is missing. This test builds such an environment from scratch: a fresh
virtual environment with a *different* torch release than the project's own (2.13.0, CPU build,
which the ranges in pyproject.toml admit), installs mmlib the way the setup cell does (plain
``pip install``, no extras), checks that torch was not replaced, and executes a chapter there with
plain ``nbclient``: every cell runs and every check cell holds, with ``glue`` falling back to
IPython's display because MyST-NB is absent.

It needs the CPU wheel of torch 2.13.0 for this Python on the machine (pip's find-links, as on
the book's CI machine); elsewhere it is skipped. It takes about a minute, mostly installing.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_TORCH = "2.13.0"
CHAPTER = "book/01_history.ipynb"


def _run(*command, **options):
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, **options)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("colab") / "venv"
    _run(sys.executable, "-m", "venv", str(env_dir))
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # What Colab has before the chapter runs: its torch, torchvision, numpy, Jupyter's kernel.
    found = subprocess.run([*pip, "--only-binary=:all:", f"torch=={COLAB_TORCH}"], capture_output=True,
                           text=True, timeout=1800)
    if found.returncode != 0:
        pytest.skip(f"torch {COLAB_TORCH} is not installable here (offline, no wheel): "
                    f"{found.stderr.strip().splitlines()[-1:]}")
    _run(*pip, "torchvision==0.28.0", "--no-deps")
    _run(*pip, "numpy", "matplotlib", "tqdm", "ipykernel", "nbclient", "nbformat")
    return python


def _version(python, package):
    return _run(str(python), "-c", f"import {package}; print({package}.__version__)").strip()


def test_installing_mmlib_keeps_colabs_torch_and_a_chapter_runs_without_myst_nb(colab, tmp_path):
    before = _version(colab, "torch")
    assert before.startswith(COLAB_TORCH)
    # The setup cell's install: plain pip, no extras (from the repository; here the working tree).
    _run(str(colab), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT))
    assert _version(colab, "torch") == before, "installing mmlib replaced Colab's torch"
    missing = subprocess.run([str(colab), "-c", "import myst_nb"], capture_output=True)
    assert missing.returncode != 0, "a Colab runtime has no MyST-NB"

    script = f"""
import nbformat, sys
from nbclient import NotebookClient
nb = nbformat.read({str(ROOT / CHAPTER)!r}, as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={{"metadata": {{"path": {str(tmp_path)!r}}}}}).execute()
errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if o.get("output_type") == "error"]
print(len(errors))
"""
    kernel_env = {**os.environ, "MMLIB_CACHE": str(tmp_path / "cache"), "JUPYTER_PATH": str(tmp_path / "jupyter")}
    _run(str(colab), "-m", "ipykernel", "install", "--prefix", str(tmp_path / "jupyter_prefix"), "--name", "python3")
    kernel_env["JUPYTER_PATH"] = str(tmp_path / "jupyter_prefix" / "share" / "jupyter")
    out = _run(str(colab), "-c", script, env=kernel_env, cwd=tmp_path)
    assert out.strip().splitlines()[-1] == "0", "a cell failed in the simulated Colab"
    # and the kernel that ran it was the simulated Colab's, with its torch
    assert json.loads((tmp_path / "jupyter_prefix" / "share" / "jupyter" / "kernels" / "python3" /
                       "kernel.json").read_text())["argv"][0] == str(colab)
