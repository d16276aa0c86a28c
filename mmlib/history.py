"""The history of multimodal models as data: dated, cited events, validated on construction.

Chapter 1 (``01_history``) tells the story with these events and draws them. Every event carries
a BibTeX key from the book's bibliography (``references.bib``, shipped with mmlib), so a claim
without a source cannot enter the timeline.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import html
import re
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from mmlib.plot import MODALITY_COLORS, OPENAI_COLOR, combination_color

MODALITIES = ("text", "image", "audio", "video")
"""The modalities the timeline knows, in the book's canonical order."""

KINDS = ("study", "model", "organisation", "product")
"""What an event is: a perception study, a model (or method), an organisation's founding, a product."""

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def _parse_date(date: str, name: str) -> tuple[int, int | None, int | None]:
    match = _DATE.match(date) if isinstance(date, str) else None
    if match is None:
        raise ValueError(
            f"event {name!r}: malformed date {date!r}; expected 'YYYY', 'YYYY-MM' or 'YYYY-MM-DD'"
        )
    year, month, day = (int(g) if g else None for g in match.groups())
    try:
        _dt.date(year, month or 1, day or 1)
    except ValueError as err:
        raise ValueError(f"event {name!r}: impossible date {date!r} ({err})") from None
    return year, month, day


@dataclass(frozen=True)
class Event:
    """One dated, cited event in the history of multimodal models."""

    date: str  # 'YYYY', 'YYYY-MM' or 'YYYY-MM-DD': only as precise as the source
    name: str
    organisation: str
    modalities: tuple[str, ...]  # empty for events that are not models (e.g. a founding)
    significance: str  # one line: why it matters
    cite: str  # BibTeX key in references.bib
    kind: str = "model"
    _ymd: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"every event needs a name, got {self.name!r}")
        object.__setattr__(self, "_ymd", _parse_date(self.date, self.name))
        if isinstance(self.modalities, str) or not isinstance(self.modalities, Iterable):
            raise ValueError(
                f"event {self.name!r}: modalities must be a tuple of names such as ('image', 'text'), "
                f"got {self.modalities!r}"
            )
        mods = tuple(self.modalities)
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown:
            raise ValueError(
                f"event {self.name!r}: unknown modality {unknown[0]!r}; expected some of {MODALITIES}"
            )
        if len(set(mods)) != len(mods):
            raise ValueError(f"event {self.name!r}: modality listed twice in {mods}")
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in mods))
        if self.kind not in KINDS:
            raise ValueError(f"event {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind in ("model", "study") and not self.modalities:
            raise ValueError(f"event {self.name!r}: a {self.kind} needs at least one modality")
        if not isinstance(self.cite, str) or not self.cite.strip():
            raise ValueError(
                f"event {self.name!r} has no citation key: every event needs a BibTeX key from references.bib"
            )
        if not isinstance(self.significance, str) or not self.significance.strip():
            raise ValueError(f"event {self.name!r}: say in one line why it matters (significance)")

    @property
    def year(self) -> int:
        return self._ymd[0]

    @property
    def month(self) -> int | None:
        return self._ymd[1]

    @property
    def decimal_year(self) -> float:
        """Position on a time axis: the middle of the month (or year) when the day is unknown."""
        year, month, day = self._ymd
        if month is None:
            return year + 0.5
        days = 15 if day is None else day
        return year + (month - 1 + (days - 0.5) / 31) / 12

    @property
    def sort_key(self) -> tuple[int, int, int]:
        year, month, day = self._ymd
        return (year, month or 0, day or 0)

    @property
    def combination(self) -> str:
        """The modalities as one label, e.g. ``'image + text'`` ('' when not a model)."""
        return " + ".join(sorted(self.modalities))

    @property
    def is_multimodal(self) -> bool:
        return len(self.modalities) >= 2

    @property
    def is_openai(self) -> bool:
        return "OpenAI" in self.organisation


class Timeline(Sequence):
    """Events sorted by date, every citation checked against the bibliography."""

    def __init__(self, events: Iterable[Event], bibliography: Iterable[str] | None = None):
        events = list(events)
        if not events:
            raise ValueError("a timeline needs at least one event, got none")
        bad = [e for e in events if not isinstance(e, Event)]
        if bad:
            raise ValueError(f"a timeline holds Event objects, got {type(bad[0]).__name__}: {bad[0]!r}")
        names = [e.name for e in events]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"event names must be unique, repeated: {dupes}")
        if bibliography is not None:
            keys = set(bibliography)
            missing = [(e.name, e.cite) for e in events if e.cite not in keys]
            if missing:
                name, key = missing[0]
                raise ValueError(
                    f"event {name!r} cites {key!r}, which is not in the bibliography "
                    f"({len(missing)} missing in all): add it to references.bib"
                )
        self._events = tuple(sorted(events, key=lambda e: e.sort_key))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Timeline(self._events[index])
        return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def __repr__(self) -> str:
        return f"Timeline({len(self)} events, {self[0].year}-{self[-1].year})"

    def find(self, name: str) -> Event:
        """The event with this name; a ``KeyError`` listing close names if there is none."""
        for event in self._events:
            if event.name == name:
                return event
        names = [e.name for e in self._events]
        close = [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()]
        close += [n for n in difflib.get_close_matches(name, names, n=3) if n not in close]
        raise KeyError(f"no event named {name!r}" + (f"; did you mean one of {close}?" if close else ""))

    def where(self, *, organisation: str | None = None, kind: str | None = None,
              multimodal: bool | None = None) -> "Timeline":
        """The events that match every given condition."""
        kept = [
            e for e in self._events
            if (organisation is None or organisation in e.organisation)
            and (kind is None or e.kind == kind)
            and (multimodal is None or e.is_multimodal == multimodal)
        ]
        if not kept:
            raise ValueError("no event matches these conditions")
        return Timeline(kept)

    def path(self, names: Iterable[str]) -> "Timeline":
        """The named events, in date order (e.g. ``timeline.path(OPENAI_PATH)``)."""
        return Timeline(self.find(name) for name in names)

    def _repr_html_(self) -> str:
        """A compact, scrollable table for notebooks and the book."""
        cell = "<td style='text-align:left;vertical-align:top;padding:2px 6px'>{}</td>"
        head = "".join(f"<th style='text-align:left;padding:2px 6px'>{h}</th>" for h in
                       ("date", "event", "organisation", "modalities", "why it matters", "source"))
        body = "".join(
            "<tr>" + "".join(cell.format(html.escape(str(v)).replace("-", "&#8209;") if k == "date"
                                         else html.escape(str(v))) for k, v in row.items()) + "</tr>"
            for row in self.to_rows()
        )
        return ("<div style='max-height:420px;overflow:auto;font-size:0.8em'>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")

    def to_rows(self) -> list[dict]:
        """The events as plain dicts (for tables)."""
        return [
            {"date": e.date, "name": e.name, "organisation": e.organisation,
             "modalities": e.combination or "-", "significance": e.significance, "cite": e.cite}
            for e in self._events
        ]


# --------------------------------------------------------------------------------------------
# The bibliography
# --------------------------------------------------------------------------------------------

_BIB_KEY = re.compile(r"^\s*@(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)


def parse_bibtex_keys(text: str) -> set[str]:
    """The entry keys of a BibTeX file's text (``@comment``/``@string`` ignored)."""
    return {key for kind, key in _BIB_KEY.findall(text) if kind.lower() not in {"comment", "string", "preamble"}}


@lru_cache(maxsize=None)
def bibliography_keys(path: str | None = None) -> frozenset[str]:
    """Keys of the book's bibliography (the ``references.bib`` shipped with mmlib by default)."""
    if path is None:
        text = resources.files("mmlib").joinpath("references.bib").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return frozenset(parse_bibtex_keys(text))


# --------------------------------------------------------------------------------------------
# The book's timeline (sources: ../shared/facts/history.md, checked against the papers)
# --------------------------------------------------------------------------------------------

_EVENTS = [
    ("1976-12", "McGurk effect", "University of Surrey", ("audio", "video"),
     "seeing lips changes what people hear: human perception fuses modalities", "mcgurk1976hearing", "study"),
    ("1984", "Automatic lipreading", "University of Illinois", ("audio", "video"),
     "first audio-visual speech recogniser: lip images help recognise speech", "petajan1984automatic"),
    ("1989", "Neural audio-visual speech recognition", "UCSD / Salk Institute", ("audio", "image"),
     "a neural network maps lip images to acoustics; better vowel recognition in noise", "yuhas1989integration"),
    ("2011-06", "Multimodal Deep Learning", "Stanford", ("audio", "video"),
     "autoencoders learn a shared audio-video representation", "ngiam2011multimodal"),
    ("2012-12", "AlexNet", "University of Toronto", ("image",),
     "a deep CNN wins ImageNet 2012: the deep-learning era of vision begins (unimodal)", "krizhevsky2012imagenet"),
    ("2012-12", "Multimodal DBM", "University of Toronto", ("image", "text"),
     "a joint generative model of images and tags that can fill in a missing modality", "srivastava2012multimodal"),
    ("2013-12", "DeViSE", "Google", ("image", "text"),
     "CNN image features mapped into a word-embedding space: zero-shot labels", "frome2013devise"),
    ("2014-09", "GoogLeNet (Inception)", "Google", ("image",),
     "ILSVRC 2014 winner; an image classifier, not a multimodal model", "szegedy2015going"),
    ("2014-11", "Show and Tell", "Google", ("image", "text"),
     "CNN encoder + LSTM decoder writes captions for images", "vinyals2015show"),
    ("2015-02", "Show, Attend and Tell", "Université de Montréal / University of Toronto", ("image", "text"),
     "captioning with attention over image regions", "xu2015show"),
    ("2015-05", "VQA", "Virginia Tech / Microsoft Research", ("image", "text"),
     "the visual question answering benchmark: image + question -> answer", "antol2015vqa"),
    ("2015-12-11", "OpenAI founded", "OpenAI", (),
     "a non-profit AI research lab is announced", "openai2015introducing", "organisation"),
    ("2017-06", "Transformer", "Google", ("text",),
     "attention-only architecture: the backbone of every later multimodal large model", "vaswani2017attention"),
    ("2018-06", "GPT", "OpenAI", ("text",),
     "generative pretraining on unlabelled text, then fine-tuning (text only)", "radford2018improving"),
    ("2019-02", "GPT-2", "OpenAI", ("text",),
     "1.5B-parameter language model, text only; staged release, full model in November 2019",
     "radford2019language"),
    ("2019-08", "ViLBERT", "Georgia Tech / Facebook AI Research", ("image", "text"),
     "two-stream BERT-style vision-language pretraining with co-attention", "lu2019vilbert"),
    ("2019-08", "LXMERT", "UNC Chapel Hill", ("image", "text"),
     "cross-modality Transformer encoder pretrained on image-text pairs", "tan2019lxmert"),
    ("2019-09", "UNITER", "Microsoft", ("image", "text"),
     "single-stream Transformer over image regions and words", "chen2020uniter"),
    ("2020-05", "GPT-3", "OpenAI", ("text",),
     "175B parameters; in-context (few-shot) learning from prompts", "brown2020language"),
    ("2020-06", "Image GPT", "OpenAI", ("image",),
     "a GPT trained on sequences of pixels (unimodal)", "chen2020generative"),
    ("2020-10", "ViT", "Google", ("image",),
     "images as sequences of patch tokens for a plain Transformer", "dosovitskiy2021image"),
    ("2021-01-05", "CLIP", "OpenAI", ("image", "text"),
     "contrastive image-text pretraining on 400M pairs; zero-shot transfer", "radford2021learning"),
    ("2021-01-05", "DALL·E", "OpenAI", ("image", "text"),
     "text-to-image generation with a 12B-parameter Transformer", "ramesh2021zero"),
    ("2021-02", "ALIGN", "Google", ("image", "text"),
     "contrastive training on 1.8B noisy image-alt-text pairs", "jia2021scaling"),
    ("2022-01", "BLIP", "Salesforce", ("image", "text"),
     "contrastive + matching + captioning objectives; bootstrapped caption filtering", "li2022blip"),
    ("2022-04", "Flamingo", "DeepMind", ("image", "text", "video"),
     "frozen language model + gated cross-attention to images and video; few-shot", "alayrac2022flamingo"),
    ("2022-09-21", "Whisper", "OpenAI", ("audio", "text"),
     "speech recognition trained on 680k hours of weakly supervised audio", "radford2023robust"),
    ("2022-11-30", "ChatGPT", "OpenAI", ("text",),
     "a chat model reaches the mass market", "openai2022chatgpt", "product"),
    ("2023-01", "BLIP-2", "Salesforce", ("image", "text"),
     "a Q-Former bridges a frozen image encoder and a frozen LLM", "li2023blip2"),
    ("2023-03-14", "GPT-4", "OpenAI", ("image", "text"),
     "OpenAI's first GPT that accepts images (image + text in, text out)", "openai2023gpt4"),
    ("2023-04", "LLaVA", "UW-Madison / Microsoft", ("image", "text"),
     "visual instruction tuning: image encoder + projection + LLM", "liu2023visual"),
    ("2023-09-25", "GPT-4V", "OpenAI", ("image", "text"),
     "vision reaches ChatGPT users; the GPT-4V(ision) system card", "openai2023gpt4v", "product"),
    ("2023-12-06", "Gemini", "Google DeepMind", ("text", "image", "audio", "video"),
     "trained multimodal from the start across text, images, audio and video", "gemini2023"),
    ("2024-02-15", "Sora", "OpenAI", ("text", "video"),
     "text-to-video with a diffusion Transformer over spacetime patches", "brooks2024video"),
    ("2024-05-13", "GPT-4o", "OpenAI", ("text", "image", "audio"),
     "one end-to-end network across text, audio and image; ~320 ms mean audio response",
     "openai2024gpt4o"),
]

OPENAI_PATH = ("GPT", "GPT-2", "GPT-3", "CLIP", "DALL·E", "Whisper", "GPT-4", "GPT-4V", "GPT-4o")
"""OpenAI's road from text to many modalities, the thread through chapter 1."""


def book_timeline() -> Timeline:
    """The book's timeline of multimodal models (chapter 1), every citation checked."""
    return Timeline((Event(*row) for row in _EVENTS), bibliography=bibliography_keys())


# --------------------------------------------------------------------------------------------
# Figures
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


def plot_timeline(timeline: Timeline, split_year: float = 2016.8):
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


def plot_modality_matrix(timeline: Timeline, ax=None):
    """A dot per (event, modality): one glance shows models going from one modality to many."""
    events = [e for e in timeline if e.modalities]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.23 * len(events) + 1.4))
    for row, event in enumerate(events):
        for col, modality in enumerate(MODALITIES):
            if modality in event.modalities:
                ax.scatter(col, row, s=90, color=MODALITY_COLORS[modality], zorder=3)
        if event.is_multimodal:
            cols = [MODALITIES.index(m) for m in event.modalities]
            ax.plot([min(cols), max(cols)], [row, row], color="#BBBBBB", lw=2, zorder=2)
    ax.set_yticks(range(len(events)), [f"{e.year}  {e.name}" for e in events], fontsize=8)
    for label, event in zip(ax.get_yticklabels(), events):
        if event.is_openai:
            label.set_color(OPENAI_COLOR)
            label.set_fontweight("bold")
    ax.set_xticks(range(len(MODALITIES)), MODALITIES)
    ax.xaxis.tick_top()
    ax.set_xlim(-0.6, len(MODALITIES) - 0.4)
    ax.set_ylim(len(events) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.15)
    ax.grid(axis="y", alpha=0.0)
    ax.set_title("Modalities per model (OpenAI in green)", pad=24)
    ax.figure.tight_layout()
    return ax.figure
