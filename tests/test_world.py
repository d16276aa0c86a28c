"""mmlib.world: pixels, captions and sounds say exactly what the scene is."""

import numpy as np
import pytest
import torch

from mmlib import world
from mmlib.world import (COLOR_RGB, COLORS, PITCH_HZ, SAMPLE_RATE, SHAPES, captions, chinese_captions,
                         default_held_out, parse_caption, position_word, questions, render_images, render_sounds,
                         sample_scenes)
from mmlib.spectrogram import log_mel_spectrogram


def one(shape="circle", color="red", size="large", x=0.5, y=0.5, shapes=world.ALL_SHAPES):
    """A single hand-placed object."""
    s = sample_scenes(1, 1, seed=0, shapes=shapes)
    s.shape[0, 0], s.color[0, 0] = shapes.index(shape), COLORS.index(color)
    s.size[0, 0], s.x[0, 0], s.y[0, 0] = world.SIZES.index(size), x, y
    return s


def drawn(image):
    """(H, W) mask of pixels that differ from the clean background."""
    return (image - 0.08).abs().sum(0) > 1e-3


# --- scenes ---------------------------------------------------------------------------------

def test_scenes_are_seeded():
    a, b, c = (sample_scenes(50, (1, 3), seed=s) for s in (7, 7, 8))
    for name in ("shape", "color", "size", "x", "y", "count"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x, c.x)


def test_objects_do_not_overlap_and_stay_inside():
    s = sample_scenes(500, 2, seed=1)
    r = np.array([world.RADIUS[z] for z in world.SIZES])[s.size]
    dist = np.hypot(s.x[:, 0] - s.x[:, 1], s.y[:, 0] - s.y[:, 1])
    assert (dist >= r[:, 0] + r[:, 1]).all()
    assert ((s.x - r >= 0) & (s.x + r <= 1) & (s.y - r >= 0) & (s.y + r <= 1)).all()


def test_distinct_objects_differ_in_colour_and_shape():
    s = sample_scenes(300, 2, seed=2, distinct=True)
    assert (s.color[:, 0] != s.color[:, 1]).all() and (s.shape[:, 0] != s.shape[:, 1]).all()


def test_exclude_and_only():
    held = default_held_out()
    assert len(held) == len(COLORS) and {s for _, s in held} == set(SHAPES)
    assert not sample_scenes(2000, (1, 3), seed=3, exclude=held).combinations() & held
    assert sample_scenes(500, 1, seed=3, only=held).combinations() <= held


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "positive number"), (dict(n=-3), "positive number"),
    (dict(n=5, n_objects=0), "n_objects"), (dict(n=5, n_objects=5), "n_objects"),
    (dict(n=5, shapes=("circle", "blob")), "unknown shape 'blob'"),
    (dict(n=5, colors=("red", "teal")), "unknown colour 'teal'"),
    (dict(n=5, sizes=("medium",)), "unknown size 'medium'"),
    (dict(n=5, colors=("red",), shapes=("circle",), exclude=[("red", "circle")]), "no .colour, shape. pair"),
])
def test_bad_scene_arguments_raise(kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        sample_scenes(n, **kwargs)


# --- images ---------------------------------------------------------------------------------

def test_image_shape_range_and_determinism():
    s = sample_scenes(20, (1, 3), seed=4)
    for size in (16, 32, 64, 128):
        img = render_images(s, size)
        assert img.shape == (20, 3, size, size) and img.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1
    assert torch.equal(render_images(s, 32, "texture"), render_images(sample_scenes(20, (1, 3), seed=4), 32, "texture"))


def test_object_region_has_its_colour():
    for color in COLORS:
        img = render_images(one("square", color), 32)
        centre = img[0, :, 16, 16]
        assert torch.allclose(centre, torch.tensor(COLOR_RGB[color]), atol=1e-6)
        assert torch.allclose(img[0, :, 0, 0], torch.full((3,), 0.08))  # corner is background


def test_shapes_differ_in_area_as_geometry_says():
    area = {s: drawn(render_images(one(s), 64)[0]).sum().item() for s in world.ALL_SHAPES}
    assert area["circle"] > area["square"] > area["diamond"]  # pi r^2 > (1.6 r)^2 > 2 r^2
    assert area["circle"] > area["star"] and area["circle"] > area["cross"] and area["circle"] > area["ring"]
    assert len({round(a) for a in area.values()}) == len(area)  # every shape has its own area
    small = drawn(render_images(one("circle", size="small"), 64)[0]).sum().item()
    assert small < 0.5 * area["circle"]


def test_position_words_match_where_the_object_is_drawn():
    for x, y in [(0.2, 0.2), (0.5, 0.2), (0.8, 0.8), (0.2, 0.8), (0.5, 0.5), (0.8, 0.5)]:
        s = one("circle", size="small", x=x, y=y)
        img = render_images(s, 48)[0]
        ys, xs = torch.nonzero(drawn(img), as_tuple=True)
        cx, cy = (xs.float().mean() + 0.5) / 48, (ys.float().mean() + 0.5) / 48
        assert position_word(cx.item(), cy.item()) == position_word(x, y) == s.objects(0)[0]["position"]


def test_domains_change_pixels_but_not_the_object_location():
    s = one("star", "blue")
    clean, texture, sketch, palette = (render_images(s, 32, d) for d in world.DOMAINS)
    inside = drawn(clean[0])
    assert not torch.equal(clean, texture) and not torch.equal(clean, palette)
    assert 0 < drawn(sketch[0]).sum() < inside.sum()  # only the outline
    assert (drawn(sketch[0]) <= inside).all()  # the outline lies on the shape
    assert texture[0, :, ~inside].std() > 0.01  # the background is textured
    assert torch.allclose(palette[0, :, 16, 16], torch.tensor(world.PALETTE_RGB["blue"]))


@pytest.mark.parametrize("size", [8, 15, 129, 32.0, "32"])
def test_bad_image_size_raises(size):
    with pytest.raises(ValueError, match="16 to 128"):
        render_images(sample_scenes(2), size)


def test_unknown_domain_raises():
    with pytest.raises(ValueError, match="unknown domain 'cartoon'"):
        render_images(sample_scenes(2), 32, "cartoon")


# --- captions -------------------------------------------------------------------------------

def test_captions_round_trip_to_the_scene_attributes():
    s = sample_scenes(400, 1, seed=5)
    for i, text in enumerate(captions(s, seed=6, distractors=0.5)):
        (parsed,) = parse_caption(text)
        obj = s.objects(i)[0]
        assert {k: parsed[k] for k in ("color", "shape", "size", "position")} == \
            {k: obj[k] for k in ("color", "shape", "size", "position")}, text


def test_relational_captions_round_trip():
    s = sample_scenes(300, 2, seed=7, distinct=True)
    for i, text in enumerate(captions(s, seed=8)):
        first, second = parse_caption(text)
        objs = {(o["color"], o["shape"]): o for o in s.objects(i)}
        a, b = objs[(first["color"], first["shape"])], objs[(second["color"], second["shape"])]
        assert first["relation"] == world.relation(a, b), text
        dx, dy = a["x"] - b["x"], a["y"] - b["y"]
        assert {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[first["relation"]]


def test_caption_options_synonyms_order_and_distractors():
    s = sample_scenes(300, 1, seed=9)
    plain = captions(s, synonyms=False, vary_order=False, position=False)
    assert all(t.split()[0] == "a" and len(t.split()) == 4 for t in plain)
    words = {w for t in captions(s, seed=1) for w in t.split()}
    assert {"crimson", "disk", "tiny"} <= words
    noisy = captions(s, seed=1, distractors=1.0)
    assert all(set(t.split()) & set(world.DISTRACTORS) for t in noisy)
    assert captions(s, seed=1) == captions(s, seed=1)
    with pytest.raises(ValueError, match="probability"):
        captions(s, distractors=1.5)


def test_questions_have_the_right_answers():
    s = sample_scenes(400, 2, seed=10, distinct=True)
    for i, (q, a) in enumerate(questions(s, seed=11)):
        objs = s.objects(i)
        words = q.split()
        if q.startswith("what colour"):
            assert a == next(o["color"] for o in objs if o["shape"] == words[4])
        elif q.startswith("what shape"):
            assert a == next(o["shape"] for o in objs if o["color"] == words[4])
        elif q.startswith("what size"):
            assert a == next(o["size"] for o in objs if (o["color"], o["shape"]) == (words[4], words[5]))
        elif q.startswith("how many"):
            assert a == "two"
        else:
            present = (words[3], words[4]) in {(o["color"], o["shape"]) for o in objs}
            assert a == ("yes" if present else "no")
    with pytest.raises(ValueError, match="unknown question type"):
        questions(s, types=("why",))


def test_chinese_captions_name_the_attributes():
    s = sample_scenes(100, 1, seed=12)
    for i, text in enumerate(chinese_captions(s)):
        o = s.objects(i)[0]
        assert world.ZH_COLORS[o["color"]] + world.ZH_SHAPES[o["shape"]] in text
        assert world.ZH_SIZES[o["size"]] + "的" in text and world.ZH_POSITIONS[o["position"]] in text


# --- sound ----------------------------------------------------------------------------------

def dominant_hz(wave):
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave))).abs()
    return spectrum.argmax().item() * SAMPLE_RATE / len(wave)


@pytest.mark.parametrize("shape", world.ALL_SHAPES)
def test_dominant_frequency_is_the_colours_pitch(shape):
    for color in COLORS:
        wave = render_sounds(one(shape, color))[0]
        assert abs(dominant_hz(wave) - PITCH_HZ[color]) <= 4.0, (shape, color)


def test_loudness_follows_size_and_onset_follows_position():
    big, small = (render_sounds(one(size=z))[0] for z in ("large", "small"))
    assert big.abs().max() / small.abs().max() == pytest.approx(world.LOUDNESS["large"] / world.LOUDNESS["small"], rel=1e-3)
    onset = lambda w: torch.nonzero(w.abs() > 1e-4)[0].item()  # noqa: E731
    left, right = (render_sounds(one(size="small", x=x))[0] for x in (0.2, 0.8))
    assert onset(left) < onset(right)


def test_timbres_differ_between_shapes():
    spectra = [torch.fft.rfft(render_sounds(one(s, "red"))[0]).abs() for s in world.ALL_SHAPES]
    for i in range(len(spectra)):
        for j in range(i + 1, len(spectra)):
            assert not torch.allclose(spectra[i] / spectra[i].max(), spectra[j] / spectra[j].max(), atol=0.05)


def test_log_mel_spectrogram_shape_and_peak_band():
    waves = render_sounds(sample_scenes(4, 1, seed=13))
    spec = log_mel_spectrogram(waves, n_mels=32)
    assert spec.shape[:2] == (4, 32) and torch.isfinite(spec).all()
    low, high = (log_mel_spectrogram(render_sounds(one("circle", c)), n_mels=32)[0] for c in ("red", "pink"))
    assert low.max(dim=1).values.argmax() < high.max(dim=1).values.argmax()  # higher pitch, higher band
    with pytest.raises(ValueError, match="batch, samples"):
        log_mel_spectrogram(waves[0])


def test_generate_bundles_the_three_modalities():
    sample = world.generate(8, seed=3)
    assert sample.images.shape == (8, 3, 32, 32) and sample.sounds.shape == (8, 4000) and len(sample.captions) == 8
