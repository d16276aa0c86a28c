"""The history of multimodal models as data: dated, cited events, validated on construction.

Chapter 1 (``01_history``) tells the story with these events and draws them
(``mmlib.plot.plot_timeline``, ``mmlib.plot.plot_modality_matrix``). Every event carries
a BibTeX key from the book's bibliography (``references.bib``, shipped with mmlib), so a claim
without a source cannot enter the timeline.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import html
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from mmlib.plot import MODALITY_ORDER

MODALITIES = MODALITY_ORDER
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


__all__ = ["MODALITIES", "KINDS", "Event", "Timeline", "parse_bibtex_keys", "bibliography_keys", "OPENAI_PATH",
           "book_timeline"]
