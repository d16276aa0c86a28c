"""mmlib.timeline: the timeline is validated data, and the figures show what the data says."""

import matplotlib.pyplot as plt
import pytest

from mmlib.timeline import (
    MODALITIES,
    OPENAI_PATH,
    Event,
    Timeline,
    bibliography_keys,
    book_timeline,
    parse_bibtex_keys,
)
from mmlib.plot import OPENAI_COLOR, plot_modality_matrix, plot_timeline


def event(**overrides):
    fields = dict(date="2021-01-05", name="CLIP", organisation="OpenAI", modalities=("image", "text"),
                  significance="contrastive image-text pretraining", cite="radford2021learning")
    fields.update(overrides)
    return Event(**fields)


@pytest.fixture(scope="module")
def timeline():
    return book_timeline()


def test_book_timeline_is_large_sorted_and_cited(timeline):
    assert len(timeline) >= 25
    keys = [e.sort_key for e in timeline]
    assert keys == sorted(keys)
    assert {e.cite for e in timeline} <= bibliography_keys()
    assert timeline[0].name == "McGurk effect" and timeline[0].year == 1976
    assert timeline[-1].name == "GPT-4o" and timeline[-1].date == "2024-05-13"


def test_corrected_facts_of_the_source_article(timeline):
    gpt2 = timeline.find("GPT-2")
    assert gpt2.year == 2019 and gpt2.modalities == ("text",)
    assert timeline.find("GPT").date == "2018-06"
    for name in ("CLIP", "DALL·E"):
        assert timeline.find(name).date == "2021-01-05"
    assert timeline.find("GoogLeNet (Inception)").modalities == ("image",)
    openai = timeline.path(OPENAI_PATH)
    assert [e.name for e in openai][:3] == ["GPT", "GPT-2", "GPT-3"]
    assert next(e for e in openai if e.is_multimodal).name == "CLIP"
    assert timeline.find("GPT-4").is_multimodal and timeline.find("GPT-4").year == 2023


def test_timeline_sorts_events_whatever_the_input_order():
    a = event(name="late", date="2024")
    b = event(name="early", date="1984")
    c = event(name="middle", date="2001-02-03")
    assert [e.name for e in Timeline([a, b, c])] == ["early", "middle", "late"]


def test_modalities_are_stored_in_canonical_order():
    assert event(modalities=("text", "image")).modalities == ("text", "image")
    assert event(modalities=["video", "audio", "text"]).modalities == ("text", "audio", "video")
    assert event(modalities=("text", "image")).combination == "image + text"


@pytest.mark.parametrize("date", ["2021-1-5", "21-01-05", "2021/01", "January 2021", "2021-13", "2021-02-30", 2021, ""])
def test_malformed_date_raises(date):
    with pytest.raises(ValueError, match="date"):
        event(date=date)


def test_unknown_modality_raises_and_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown modality 'vision'.*text"):
        event(modalities=("vision", "text"))


def test_modalities_given_as_a_string_raise():
    with pytest.raises(ValueError, match="tuple of names"):
        event(modalities="image")


def test_a_model_needs_a_modality():
    with pytest.raises(ValueError, match="at least one modality"):
        event(modalities=())


@pytest.mark.parametrize("cite", ["", "   ", None])
def test_missing_citation_key_raises(cite):
    with pytest.raises(ValueError, match="no citation key"):
        event(cite=cite)


def test_citation_key_not_in_bibliography_raises():
    with pytest.raises(ValueError, match="'nobody2099'.*not in the bibliography"):
        Timeline([event(cite="nobody2099")], bibliography=bibliography_keys())


def test_unknown_kind_and_duplicate_names_raise():
    with pytest.raises(ValueError, match="unknown kind"):
        event(kind="rumour")
    with pytest.raises(ValueError, match="unique"):
        Timeline([event(), event()])
    with pytest.raises(ValueError, match="at least one event"):
        Timeline([])


def test_find_suggests_close_names(timeline):
    with pytest.raises(KeyError, match="GPT-2"):
        timeline.find("gpt-2 model")
    with pytest.raises(KeyError, match="did you mean"):
        timeline.find("blip")


def test_decimal_year_places_events_inside_their_year():
    assert 2021.0 < event(date="2021-01-05").decimal_year < 2021.1
    assert event(date="1984").decimal_year == 1984.5
    assert event(date="2020-12").decimal_year < 2021


def test_parse_bibtex_keys_ignores_comments_and_strings():
    text = "@string{x = 1}\n@Article{key1,\n title={a}}\n@comment{nope,}\n  @misc{ key-2 ,\n}"
    assert parse_bibtex_keys(text) == {"key1", "key-2"}


def test_book_bibliography_is_the_linked_file():
    from pathlib import Path

    book_bib = Path(__file__).parents[1] / "book" / "references.bib"
    assert bibliography_keys(str(book_bib)) == bibliography_keys()
    assert len(bibliography_keys()) >= 40


def test_timeline_figure_labels_every_event_and_highlights_openai(timeline):
    fig = plot_timeline(timeline)
    # Long names wrap onto two lines (and may end in "…"): compare the words.
    def squash(name):
        return "".join(name.split()).rstrip("…")

    texts = {squash(t.get_text()): t for ax in fig.axes for t in ax.texts}
    assert len(texts) == len(timeline)
    for e in timeline:
        label = next(text for shown, text in texts.items()
                     if squash(e.name).startswith(shown))
        assert (label.get_color() == OPENAI_COLOR) == e.is_openai
    # Every label lies inside its own panel (none runs under the other one).
    fig.canvas.draw()
    for text in texts.values():
        extent, box = text.get_window_extent(), text.axes.bbox
        assert box.x0 - 2 <= extent.x0 and extent.x1 <= box.x1 + 2, text.get_text()
    points = sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)
    assert points == len(timeline)
    plt.close(fig)


def test_modality_matrix_has_one_dot_per_event_and_modality(timeline):
    fig = plot_modality_matrix(timeline)
    ax = fig.axes[0]
    dots = sum(len(c.get_offsets()) for c in ax.collections)
    assert dots == sum(len(e.modalities) for e in timeline)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(MODALITIES)
    plt.close(fig)


def test_html_table_lists_every_event(timeline):
    html = timeline._repr_html_()
    assert html.count("<tr>") == len(timeline) + 1
    assert "DALL·E" in html
