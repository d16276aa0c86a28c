"""The book's figure style and colours: one colour per modality, the same in every chapter."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
import torch

from mmlib.spectrogram import log_mel_spectrogram

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


PAGE_WIDTH = 6.9
"""Inches a figure may be wide: the built page's text column is ~690 CSS px (100 dpi), so a
figure of this width is shown at its own size and its 9-10 pt labels stay 9-10 pt. A wider
figure is shrunk to fit, and its labels with it."""


def use_book_style() -> None:
    """Figure defaults for the book: readable at page width, light grid, no top/right spines."""
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "figure.figsize": (PAGE_WIDTH, 3.9),
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


def show_images(images, captions=None, ncols: int = 6, title: str | None = None, width: float | None = None):
    """A grid of images (tensor (n, 3, H, W) in [0, 1]) with their captions underneath;
    ``width``: inches per image (default: the page's width over ``ncols``)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (n, 3, H, W), got {tuple(images.shape)}")
    n = len(images)
    if captions is not None and len(captions) != n:
        raise ValueError(f"got {n} images but {len(captions)} captions")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    width = width or PAGE_WIDTH / ncols
    chars = max(10, int(width * 14))  # characters of 8-pt text across one image
    lines = max((len(textwrap.wrap(c, chars)) for c in captions), default=0) if captions else 0
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, (width + 0.22 * lines) * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
        ax.set_anchor("S")  # the room a caption needs stays above its image
        if captions is not None:
            ax.set_title("\n".join(textwrap.wrap(captions[i], chars)), fontsize=8, fontweight="normal")
    if title:
        fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def show_sound(wave, sample_rate: int, title: str | None = None, n_mels: int = 32):
    """A waveform (1-D tensor) and its log-mel spectrogram, one above the other."""
    wave = torch.as_tensor(wave).flatten().float().cpu()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(PAGE_WIDTH, 3.8), sharex=True)
    t = torch.arange(len(wave)) / sample_rate
    top.plot(t, wave, lw=0.6, color=MODALITY_COLORS["audio"])
    top.set_ylabel("amplitude")
    spec = log_mel_spectrogram(wave[None], sample_rate, n_mels=n_mels)[0]
    bottom.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, len(wave) / sample_rate, 0, n_mels))
    bottom.set_ylabel("mel band")
    bottom.set_xlabel("time (s)")
    bottom.grid(False)
    if title:
        top.set_title(title)
    fig.tight_layout()
    return fig


def show_attention(image, weights, words, grid: int, title: str | None = None):
    """Where each word looks: the image, then one heat map per word over a ``grid x grid`` of regions.

    weights: (n_words, grid * grid) attention of each word over the image regions.
    """
    weights = weights.detach().cpu()
    if weights.shape != (len(words), grid * grid):
        raise ValueError(f"expected weights of shape ({len(words)}, {grid * grid}), got {tuple(weights.shape)}")
    side = min(1.6, PAGE_WIDTH / (len(words) + 1))
    fig, axes = plt.subplots(1, len(words) + 1, figsize=(side * (len(words) + 1), side + 0.4))
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    axes[0].set_title("image", fontsize=9, fontweight="normal")
    for ax, word, w in zip(axes[1:], words, weights):
        ax.imshow(w.reshape(grid, grid).numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(word, fontsize=9, fontweight="normal")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=10)
    fig.tight_layout()
    return fig


def show_grid(images, ncols: int, row_labels=None, title: str | None = None, width: float = PAGE_WIDTH):
    """Images (n, 3, H, W) in [0, 1] tiled into one picture, ``ncols`` per row
    (``torchvision.utils.make_grid``), with a label at the start of each row."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (n, 3, H, W), got {tuple(images.shape)}")
    nrows = -(-len(images) // ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"{len(images)} images in rows of {ncols} make {nrows} rows, got {len(row_labels)} labels")
    from torchvision.utils import make_grid  # on use: importing mmlib.plot needs no torchvision

    grid = make_grid(images.detach().cpu().clamp(0, 1), nrow=ncols, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(width, width * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    side = images.shape[2] + 2
    ax.set(xticks=[], yticks=[side * (r + 0.5) for r in range(nrows)] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def show_similarity(similarity, rows, columns, title: str | None = None):
    """A similarity matrix (rows x columns) as a heat map with each value written in its cell
    (chapter 4: test images against their captions)."""
    similarity = torch.as_tensor(similarity).detach().cpu()
    if similarity.shape != (len(rows), len(columns)):
        raise ValueError(f"a {tuple(similarity.shape)} matrix needs {similarity.shape[0]} row and "
                         f"{similarity.shape[1]} column labels, got {len(rows)} and {len(columns)}")
    fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH, 0.9 * len(columns) + 1.5), 0.6 * len(rows) + 1.6))
    ax.imshow(similarity.numpy(), cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for (i, j), value in np.ndenumerate(similarity.numpy()):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="w")
    ax.grid(False)
    if title:
        ax.set_title(title)
    return fig


def plot_embeddings(image_emb, text_emb, ax=None, title: str | None = None):
    """Image and text embeddings projected together on their first two principal components, in
    the modality colours (chapter 4b: the modality gap)."""
    image_emb, text_emb = (torch.as_tensor(e).detach().cpu().float() for e in (image_emb, text_emb))
    if image_emb.dim() != 2 or image_emb.shape[1:] != text_emb.shape[1:]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.8))
    both = torch.cat([image_emb, text_emb])
    centred = both - both.mean(0)
    xy = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
    ax.scatter(*xy[:len(image_emb)].T, s=8, color=MODALITY_COLORS["image"], label="images")
    ax.scatter(*xy[len(image_emb):].T, s=8, color=MODALITY_COLORS["text"], label="captions")
    ax.set(xticks=[], yticks=[], xlabel="principal component 1", ylabel="principal component 2")
    if title:
        ax.set_title(title)
    return ax.figure


STRATEGY_STYLE = {
    "linear_probe": dict(color="#4C72B0", marker="o", label="linear probe (frozen)"),
    "fine_tune": dict(color="#DD8452", marker="s", label="fine-tune"),
    "lp_ft": dict(color="#55A868", marker="^", label="LP-FT"),
    "scratch": dict(color="#8C8C8C", marker="x", label="from scratch"),
}
"""One look per transfer strategy (chapters 4 and 5)."""


def plot_label_efficiency(curves: dict, ax=None, title: str | None = None, chance: float | None = None,
                          ylabel: str = "test accuracy"):
    """Accuracy against labelled examples per class (log axis), one line per entry of ``curves``
    (name -> k -> accuracy; ``mmlib.transfer.compare_strategies`` returns such a table). Strategy
    names get their book style; a ``'zero_shot'`` entry (k = 0) is a dashed horizontal line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    ks = sorted({k for name, row in curves.items() if name != "zero_shot" for k in row})
    for name, row in curves.items():
        if name == "zero_shot":
            ax.axhline(row[0], color="#C44E52", ls="--", label="zero-shot (no labels)")
            continue
        style = STRATEGY_STYLE.get(name, dict(marker="o", label=name))
        ax.plot(sorted(row), [row[k] for k in sorted(row)], **style)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xscale="log", xlabel="labelled examples per class (log scale)", ylabel=ylabel, ylim=(0, 1.02))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    if title:
        ax.set_title(title)
    return ax.figure


# --------------------------------------------------------------------------------------------
# Chapter 1: the timeline (a ``mmlib.timeline.Timeline``)
# --------------------------------------------------------------------------------------------

def _pack_lanes(intervals: list[tuple[float, float]], gap: float) -> list[int]:
    """Greedy lanes for labels: each (start, end) goes to the lowest lane free from start - gap."""
    lane_ends: list[float] = []
    lanes = [0] * len(intervals)
    for i in sorted(range(len(intervals)), key=lambda i: intervals[i][0]):
        start, end = intervals[i]
        free = [lane for lane, last in enumerate(lane_ends) if start > last + gap]
        if free:
            lanes[i] = free[0]
            lane_ends[free[0]] = end
        else:
            lanes[i] = len(lane_ends)
            lane_ends.append(end)
    return lanes


def _label(name: str, width: int = 16) -> str:
    """An event's name on at most two lines (long names would not fit the early panel)."""
    if len(name) <= width + 4:
        return name
    return "\n".join(textwrap.wrap(name, width + 2, max_lines=2, placeholder="…"))


def plot_timeline(timeline, split_year: float = 2016.8):
    """Events by date, coloured by modality combination, OpenAI's events highlighted.

    The years before ``split_year`` are few and far apart, so they get a narrower panel of their
    own (a broken time axis). Labels are packed into lanes so that none overlaps. Returns the figure.
    """
    width_in, ratios, size = 6.9, (1.5, 2.4), 8  # page width (mmlib.plot.PAGE_WIDTH), font pt
    first, last = timeline[0].decimal_year, timeline[-1].decimal_year
    spans = ((first - 1.5, split_year), (split_year, last + 1.6))
    panels = []
    for (lo, hi), ratio in zip(spans, ratios):
        years_per_inch = (hi - lo) / (width_in * 0.95 * ratio / sum(ratios))
        events = [e for e in timeline if lo <= e.decimal_year < hi]
        placed = []  # (event, label on the left?, interval the label covers)
        for e in events:
            longest = max(len(line) for line in _label(e.name).split("\n"))
            width = (0.01 * size * longest + 0.2) * years_per_inch  # label width in years
            left = e.decimal_year + width > hi and e.decimal_year - width >= lo
            span = (e.decimal_year - width, e.decimal_year) if left else (e.decimal_year, e.decimal_year + width)
            placed.append((e, left, span))
        lanes = _pack_lanes([span for _, _, span in placed], 0.05 * years_per_inch)
        panels.append([(e, left, lane) for (e, left, _), lane in zip(placed, lanes)])
    n_lanes = max(lane for panel in panels for _, _, lane in panel) + 1
    height = 0.36 * n_lanes + 2.2
    fig, axes = plt.subplots(1, 2, figsize=(width_in, height), sharey=True,
                             gridspec_kw={"width_ratios": ratios, "wspace": 0.03})
    for axis, (lo, hi), panel in zip(axes, spans, panels):
        for event, left, lane in panel:
            color = combination_color(event.modalities) if event.modalities else "#9E9E9E"
            axis.plot([event.decimal_year] * 2, [-0.6, lane], color="#DDDDDD", lw=0.8, zorder=1)
            axis.scatter(event.decimal_year, lane, s=60, zorder=3, color=color,
                         edgecolors=OPENAI_COLOR if event.is_openai else "white",
                         linewidths=2.2 if event.is_openai else 0.8)
            axis.annotate(_label(event.name), (event.decimal_year, lane), xytext=(-6 if left else 6, 0),
                          textcoords="offset points", fontsize=size, va="center", ha="right" if left else "left", color=OPENAI_COLOR if event.is_openai else "#222222",
                          fontweight="bold" if event.is_openai else "normal")
        axis.set_xlim(lo, hi)
        axis.set_xlabel("year")
        axis.grid(axis="y", alpha=0)
    early, late = axes
    early.set_xticks(range(1980, int(split_year) + 1, 10))
    late.set_xticks(range(int(split_year) + 1, int(last) + 2))
    early.set_yticks([])
    early.set_ylim(-0.6, n_lanes - 0.4)
    late.spines["left"].set_linestyle((0, (4, 4)))
    early.set_title("1976-2016 (compressed)", fontsize=9, fontweight="normal")
    late.set_title("2017 onwards", fontsize=9, fontweight="normal")
    combos = sorted({e.combination for e in timeline if e.modalities}, key=lambda c: (c.count("+"), c))
    handles = [Line2D([], [], marker="o", ls="", color=combination_color(c.split(" + ")), label=c) for c in combos]
    handles.append(Line2D([], [], marker="o", ls="", color="#9E9E9E", markeredgecolor=OPENAI_COLOR,
                          markeredgewidth=2, label="OpenAI (outlined)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=size, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Multimodal models by date, coloured by the modalities they combine",
                 fontweight="bold", fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.99, top=1 - 0.55 / height, bottom=1.3 / height)
    return fig


def plot_modality_matrix(timeline, ax=None):
    """A dot per (event, modality): one glance shows models going from one modality to many."""
    events = [e for e in timeline if e.modalities]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.23 * len(events) + 1.4))
    for row, event in enumerate(events):
        for col, modality in enumerate(MODALITY_ORDER):
            if modality in event.modalities:
                ax.scatter(col, row, s=90, color=MODALITY_COLORS[modality], zorder=3)
        if event.is_multimodal:
            cols = [MODALITY_ORDER.index(m) for m in event.modalities]
            ax.plot([min(cols), max(cols)], [row, row], color="#BBBBBB", lw=2, zorder=2)
    ax.set_yticks(range(len(events)), [f"{e.year}  {e.name}" for e in events], fontsize=8)
    for label, event in zip(ax.get_yticklabels(), events):
        if event.is_openai:
            label.set_color(OPENAI_COLOR)
            label.set_fontweight("bold")
    ax.set_xticks(range(len(MODALITY_ORDER)), MODALITY_ORDER)
    ax.xaxis.tick_top()
    ax.set_xlim(-0.6, len(MODALITY_ORDER) - 0.4)
    ax.set_ylim(len(events) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.15)
    ax.grid(axis="y", alpha=0.0)
    ax.set_title("Modalities per model (OpenAI in green)", pad=24)
    ax.figure.tight_layout()
    return ax.figure


__all__ = ["MODALITY_COLORS", "COMBINATION_COLORS", "OPENAI_COLOR", "MODALITY_ORDER", "combination_name",
           "combination_color", "PAGE_WIDTH", "use_book_style", "show_images", "show_sound", "show_attention",
           "show_grid", "show_similarity", "plot_embeddings", "STRATEGY_STYLE", "plot_label_efficiency",
           "plot_timeline", "plot_modality_matrix"]
