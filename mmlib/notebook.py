"""What every chapter's first cells use: ``setup`` (seed, device, figure style) and ``glue``.

``glue`` is MyST-NB's: it records a value so the book's prose can quote it
(``{glue:text}`name```) instead of typing numbers by hand. On Colab, where MyST-NB is not
installed, the fallback below simply shows the value, so the same notebook runs everywhere.
"""

from __future__ import annotations

import inspect
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


def setup(seed: int = 0, verbose: bool = True) -> torch.device:
    """Seed everything, choose the device, set the book's figure style; return the device."""
    seed_everything(seed)
    use_book_style()
    device = default_device()
    if verbose:
        print(f"mmlib {mmlib.__version__} | torch {torch.__version__} | device: {device} | seed: {seed}")
    return device


def show_source(obj) -> Any:
    """Display the source code of a function or class from mmlib, highlighted (chapter 3)."""
    from IPython.display import Code  # IPython comes with Jupyter, not with mmlib: import on use

    return Code(inspect.getsource(obj), language="python")
