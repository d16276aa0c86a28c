"""The book's figure style and colours: one colour per modality, the same in every chapter."""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib as mpl

MODALITY_COLORS = {
    "text": "#4C72B0",  # blue
    "image": "#DD8452",  # orange
    "audio": "#55A868",  # green
    "video": "#8172B3",  # purple
}
"""One colour per modality, used by every figure in the book."""

COMBINATION_COLORS = {
    "": "#9E9E9E",  # not a model (an organisation, a product launch of a text model, ...)
    "image + text": "#C44E52",
    "audio + video": "#937860",
    "audio + image": "#64B5CD",
    "audio + text": "#E1B12C",
    "text + video": "#DA8BC3",
    "audio + image + text": "#222222",
    "audio + image + text + video": "#000000",
}
"""Colours for combinations of modalities; a single modality uses ``MODALITY_COLORS``."""

OPENAI_COLOR = "#10A37F"
"""Highlight colour for OpenAI's own models in the history chapter."""

MODALITY_ORDER = ("text", "image", "audio", "video")


def combination_name(modalities: Iterable[str]) -> str:
    """Canonical name of a set of modalities: sorted and joined, e.g. ``'image + text'``."""
    return " + ".join(sorted(set(modalities)))


def combination_color(modalities: Iterable[str]) -> str:
    """The colour of a modality combination (a single modality keeps its own colour)."""
    mods = sorted(set(modalities))
    if len(mods) == 1:
        return MODALITY_COLORS[mods[0]]
    return COMBINATION_COLORS.get(" + ".join(mods), "#7F7F7F")


def use_book_style() -> None:
    """Figure defaults for the book: readable at page width, light grid, no top/right spines."""
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "figure.figsize": (8, 4.5),
            "font.size": 10,
            "axes.titlesize": 12,
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "legend.frameon": False,
        }
    )
