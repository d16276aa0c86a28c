"""What the chapters use around their experiments: ``setup`` (seed, device, threads, figure
style), ``glue`` for numbers the prose quotes, ``table`` for every table, ``recipe_table`` to show
a recipe's fields, ``show_source`` to show mmlib's code.

``glue`` records a value so the book's prose can quote it (``{glue:text}`name```) instead of
typing numbers by hand. It writes the output MyST-NB's own ``glue`` writes (``_record``; a test
compares the two) without importing MyST-NB's, whose import pulls in a JSON-schema validator and
costs every chapter about a second. On Colab, where MyST-NB is not installed, ``glue`` simply
shows the value, so the same notebook runs everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import textwrap
import time
from typing import Any, Mapping, Sequence

import torch

from mmlib.plot import use_book_style
from mmlib.train import default_device, seed_everything

GLUE_PREFIX = "application/papermill.record/"  # MyST-NB reads glued values under this prefix


def _record(name: str, value: Any, display: bool = True) -> None:
    """What ``myst_nb.glue`` does: display ``value``'s formats with the name in the output's
    metadata, each format behind ``GLUE_PREFIX`` unless the value is also shown."""
    import IPython.display
    from IPython.core.formatters import format_display_data

    formats, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = dict(name=name, mime_prefix=prefix)
    IPython.display.display({prefix + k: v for k, v in formats.items()}, raw=True, metadata=metadata)


# the book build and local installs with the [book] extra; on Colab, None (tests monkeypatch it)
_myst_glue = _record if importlib.util.find_spec("myst_nb") is not None else None


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
        from mmlib import __version__  # the package root, above every module: imported when called

        print(f"mmlib {__version__} | torch {torch.__version__} | device: {device} | seed: {seed} | "
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


def seconds_per_step(model: torch.nn.Module, data, batch_size: int, *, repeat: int = 5, device=None) -> float:
    """The median wall time of one forward and backward pass of ``model.loss`` on the first
    ``batch_size`` examples of ``data``, in training mode (what a training step costs before the
    optimiser's update). Gradients are cleared and the model's mode restored afterwards."""
    if batch_size < 1 or batch_size > len(data):
        raise ValueError(f"batch_size must be between 1 and the {len(data)} examples, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch = data.batch(torch.arange(batch_size), device)
    was_training = model.training
    model.train()

    try:
        return seconds_per_call(lambda: model.loss(batch)["loss"].backward(), repeat=repeat)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


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


_TABLE_STYLE = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0.5em 0 1em;"},
    {"selector": "th, td", "props": "padding: 0.25em 0.9em; border-bottom: 1px solid #ddd;"},
    {"selector": "thead th", "props": "border-bottom: 2px solid #888; text-align: right;"},
    {"selector": "th.row_heading, th.index_name", "props": "text-align: left;"},
    {"selector": "td", "props": "text-align: right;"},
]
"""How every table of the book looks: thin rules between rows, a heavier one under the header."""


def table(rows: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]], digits: int = 3,
          index: str | None = None, formats: Mapping[str, str] | None = None):
    """A table as the notebook shows it (Jupyter, Colab and the built book render it as HTML):
    ``rows`` maps each row's label to its {column: value}, or is a list of such dicts (then
    ``index``, if given, names the column that labels the rows). Floats show ``digits``
    decimals, whole numbers a thousands separator; ``formats`` gives columns their own
    ({'seconds': '{:.1f}'}). Returns a pandas ``Styler``; its ``.data`` is the DataFrame."""
    import pandas as pd  # import on use: a chapter without tables never pays for pandas

    if isinstance(rows, Mapping):
        frame = pd.DataFrame.from_dict({k: dict(v) for k, v in rows.items()}, orient="index")
    else:
        frame = pd.DataFrame([dict(r) for r in rows])
        if index is not None:
            if index not in frame.columns:
                raise ValueError(f"no column {index!r} to label the rows; the columns are {list(frame.columns)}")
            frame = frame.set_index(index)
            frame.columns.name, frame.index.name = index, None  # one header row: the name in its corner
    if frame.empty:
        raise ValueError("a table needs at least one row with one column")
    unknown = [c for c in formats or {} if c not in frame.columns]
    if unknown:
        raise ValueError(f"formats name columns {unknown} that the table lacks: {list(frame.columns)}")
    styled = frame.style.format(precision=digits, thousands=",", na_rep="–")
    for column, fmt in (formats or {}).items():
        styled = styled.format(fmt, subset=[column], na_rep="–")
    return styled.set_table_styles(_TABLE_STYLE, overwrite=False)


def _flat(value, prefix: str = "") -> dict[str, Any]:
    """A recipe's fields as 'name' -> value, nested recipes as 'lm.steps', dicts as 'm=4'."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            out.update(_flat(getattr(value, f.name), f"{prefix}{f.name}."))
        return out
    if isinstance(value, Mapping):
        value = ", ".join(f"{k}={v}" for k, v in value.items()) or "–"
    elif isinstance(value, tuple):
        value = ", ".join(map(str, value))
    return {prefix.rstrip("."): "–" if value is None else value}


def recipe_table(**recipes):
    """Every hyperparameter of one or more recipes at a glance: one row per field (nested ones
    as 'lm.steps'), one column per recipe, by the keyword it is given under."""
    if not recipes or not all(dataclasses.is_dataclass(r) for r in recipes.values()):
        raise ValueError("give recipes by name, e.g. recipe_table(chapter_7=VQA)")
    columns = {name: _flat(r) for name, r in recipes.items()}
    fields = list(dict.fromkeys(f for c in columns.values() for f in c))
    rows = {f: {name: _text(c.get(f, "")) for name, c in columns.items()} for f in fields}
    return table(rows)


def _text(value) -> str:
    """A recipe value as the table shows it: 20,000; 0.001; 'mlp'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


__all__ = ["glue", "busy_cpus", "choose_threads", "setup", "show_source", "seconds_per_call", "seconds_per_step", "reference_time",
           "table", "recipe_table"]
