"""What every chapter's first cells use: ``setup`` (seed, device, figure style) and ``glue``.

``glue`` is MyST-NB's: it records a value so the book's prose can quote it
(``{glue:text}`name```) instead of typing numbers by hand. On Colab, where MyST-NB is not
installed, the fallback below simply shows the value, so the same notebook runs everywhere.
"""

from __future__ import annotations

import inspect
import os
import textwrap
import time
from typing import Any

import torch

import mmlib
from mmlib.plot import use_book_style
from mmlib.train import default_device, seed_everything

try:  # the book build and local installs with the [book] extra
    from myst_nb import glue as _myst_glue
except ImportError:  # pragma: no cover - exercised by tests through monkeypatching
    _myst_glue = None


def glue(name: str, value: Any, display: bool = True) -> None:
    """Record ``value`` under ``name`` for the book's prose (and show it, unless ``display=False``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue names must be identifiers like 'fused_acc', got {name!r}")
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)
    elif display:
        from IPython.display import display as ipy_display

        ipy_display(value)


def busy_cpus(interval: float = 0.25) -> float:
    """How many CPUs other processes keep busy right now (Linux: from /proc/stat over
    ``interval`` seconds; elsewhere the 1-minute load average; 0 if neither is available)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
        return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))
    except OSError:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def choose_threads() -> int:
    """torch's thread count for this machine now: the CPUs this process may use, less those
    other jobs keep busy, at least one. Two jobs that each use every core slow each other down
    far more than twofold (benchmarks/contention.py measures it). ``MMLIB_THREADS`` overrides
    the choice (the thread count can change the last digits of a result: set it to compare runs
    made under different loads)."""
    if os.environ.get("MMLIB_THREADS"):
        value = os.environ["MMLIB_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MMLIB_THREADS must be a positive whole number, got {value!r}")
        return int(value)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(available, round(available - busy_cpus())))


def setup(seed: int = 0, verbose: bool = True, chapter: str | None = None) -> torch.device:
    """Seed everything, choose the device and torch's thread count, set the book's figure
    style; return the device. ``chapter`` (the notebook's name, e.g. '05_transfer') glues the
    chapter's measured wall time as ``reference_time`` for its first line."""
    if chapter is not None:
        try:
            measured = reference_time(chapter)
        except KeyError:  # a new chapter, before its first benchmark run
            measured = "(not yet measured)"
        glue("reference_time", measured, display=False)
    seed_everything(seed)
    use_book_style()
    _sharp_figures()
    device = default_device()
    if device.type == "cpu":
        torch.set_num_threads(choose_threads())
    if verbose:
        print(f"mmlib {mmlib.__version__} | torch {torch.__version__} | device: {device} | seed: {seed} | "
              f"threads: {torch.get_num_threads()}")
    return device


def _sharp_figures() -> None:
    """Inline figures as 'retina' PNGs (twice the pixels, same size on the page), when running
    under IPython; elsewhere nothing to do."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - plain Python without Jupyter
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def show_source(obj) -> Any:
    """Display the source code of a function or class from mmlib, highlighted (chapter 3)."""
    from IPython.display import Code  # IPython comes with Jupyter, not with mmlib: import on use

    return Code(textwrap.dedent(inspect.getsource(obj)), language="python")


def seed_spread(claim: str) -> dict[str, dict]:
    """The seed-spread benchmark's table for one claim (``benchmarks/seeds.py --write`` stores
    it in ``mmlib/seed_spread.json``): name -> {"mean", "std", "values"} over its seeds."""
    import json
    from importlib import resources

    stored = json.loads(resources.files("mmlib").joinpath("seed_spread.json").read_text())
    if claim not in stored:
        raise KeyError(f"no seed spread for {claim!r}: the benchmark measured {sorted(stored)}; "
                       f"run python benchmarks/seeds.py {claim} --write")
    return stored[claim]["rows"]


def beats(claim: str, a: str, b: str) -> bool:
    """Does ``a`` beat ``b`` beyond the seed spread? True when the mean of ``a`` over the
    benchmark's seeds exceeds that of ``b`` by more than their two standard deviations together
    (the book's rule for stating a ranking; otherwise the two tie)."""
    rows = seed_spread(claim)
    unknown = [n for n in (a, b) if n not in rows]
    if unknown:
        raise KeyError(f"the {claim!r} spread has no rows {unknown}; it has {list(rows)}")
    gap = rows[a]["mean"] - rows[b]["mean"]
    return gap > rows[a]["std"] + rows[b]["std"]


def print_spread(claim: str, this_run: dict[str, float] | None = None,
                 names: list[str] | None = None) -> None:
    """A table of this run's numbers beside the mean ± std over seeds from the benchmark
    (the rows of ``names``; by default those of ``this_run``, or all)."""
    rows = seed_spread(claim)
    names = names or [n for n in rows if this_run is None or n in this_run]
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise KeyError(f"the {claim!r} spread has no rows {unknown}; it has {list(rows)}")
    seeds = len(next(iter(rows.values()))["values"])
    width = max(len(n) for n in names)
    head = f"{'':<{width}}  {'this run':>8}  over {seeds} seeds"
    print(head if this_run is not None else head.replace(f"  {'this run':>8}", ""))
    for name in names:
        row = rows[name]
        ours = f"  {this_run.get(name, float('nan')):>8.3f}" if this_run is not None else ""
        print(f"{name:<{width}}{ours}  {row['mean']:.3f} ± {row['std']:.3f}")


def seconds_per_call(fn, repeat: int = 5) -> float:
    """The median wall time of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def reference_time(chapter: str) -> str:
    """How long a chapter runs on the book's reference machine, as measured by
    ``benchmarks/run.py --write`` (stored in ``mmlib/chapter_times.json``): e.g. 'about 50 s'."""
    import json
    from importlib import resources

    stored = json.loads(resources.files("mmlib").joinpath("chapter_times.json").read_text())
    if chapter not in stored["chapters"]:
        raise KeyError(f"no measured time for chapter {chapter!r}: the benchmark measured "
                       f"{sorted(stored['chapters'])}; run python benchmarks/run.py --write")
    seconds = stored["chapters"][chapter]["wall_s"]
    return f"about {max(10, round(seconds / 10) * 10):.0f} s" if seconds < 100 else \
        f"about {seconds / 60:.1f} minutes"
