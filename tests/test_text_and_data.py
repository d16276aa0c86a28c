"""mmlib.text and mmlib.data: the tokenizer covers the world; datasets are seeded and leak-free."""

import pytest
import torch

from mmlib import world
from mmlib.data import ANSWERS, TASKS, make_dataset
from mmlib.text import Tokenizer
from mmlib.world import captions, chinese_captions, parse_caption, questions, sample_scenes

HELD = world.default_held_out()


# --- tokenizer ------------------------------------------------------------------------------

def test_vocabulary_covers_everything_the_world_says():
    en, zh = Tokenizer.for_world("en", strict=True), Tokenizer.for_world("zh", strict=True)
    for n_objects in (1, 2, 3, 4):
        s = sample_scenes(300, n_objects, seed=n_objects, shapes=world.ALL_SHAPES)
        for text in captions(s, distractors=0.5) + [q for q, _ in questions(s)] + [a for _, a in questions(s)]:
            en.encode(text)  # strict: raises on any unknown word
        for text in chinese_captions(s):
            zh.encode(text)


def test_encode_decode_round_trip_and_specials():
    tok = Tokenizer.for_world("en")
    text = "a tiny crimson disk on the left"
    ids = tok.encode(text, add_special=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids) == text
    zh = Tokenizer.for_world("zh")
    assert zh.decode(zh.encode("一个小的红色圆形")) == "一个小的红色圆形"


def test_unknown_words_map_to_unk_or_raise_when_strict():
    assert Tokenizer.for_world("en").encode("a zebra") == [Tokenizer.for_world("en").stoi["a"], 1]
    with pytest.raises(ValueError, match="unknown token 'zebra'"):
        Tokenizer.for_world("en", strict=True).encode("a zebra")


def test_batch_pads_and_reports_lengths():
    tok = Tokenizer.for_world("en")
    ids, lengths = tok.batch(["a red circle", "a big blue square on the left"])
    assert ids.shape == (2, 7) and lengths.tolist() == [3, 7]
    assert (ids[0, 3:] == tok.pad_id).all() and (ids[1] != tok.pad_id).all()
    assert tok.decode(ids[0]) == "a red circle"


@pytest.mark.parametrize("call,match", [
    (lambda t: t.batch([]), "non-empty"), (lambda t: t.batch("a red circle"), "wrap it in a list"),
    (lambda t: t.decode([0, 999]), "outside the vocabulary"), (lambda t: t.encode(5), "expected a string"),
])
def test_tokenizer_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(Tokenizer.for_world("en"))


def test_tokenizer_bad_construction():
    with pytest.raises(ValueError, match="level"):
        Tokenizer(["a"], level="byte")
    with pytest.raises(ValueError, match="empty"):
        Tokenizer([])
    with pytest.raises(ValueError, match="'en' or 'zh'"):
        Tokenizer.for_world("fr")


# --- datasets -------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_batches(task):
    ds = make_dataset(task, 64, seed=1)
    batch = next(ds.batches(16))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    if task != "attributes":
        assert batch["tokens"].shape[0] == 16 and (batch["lengths"] > 0).all()
    if task == "trimodal":
        assert batch["sound"].shape == (16, 4000)
    assert sum(len(b["image"]) for b in ds.batches(10)) == 64


def test_labels_match_the_scenes_and_pixels_match_the_renderer():
    ds = make_dataset("attributes", 50, seed=2)
    assert ds.labels["color"].tolist() == ds.scenes.color[:, 0].tolist()
    assert torch.allclose(ds[0]["image"], world.render_images(ds.scenes[:1])[0], atol=1 / 255)


def test_datasets_are_reproducible_and_splits_differ():
    a, b = make_dataset("pairs", 100, seed=3), make_dataset("pairs", 100, seed=3)
    assert torch.equal(a.images, b.images) and a.texts == b.texts
    test = make_dataset("pairs", 100, seed=3, split="test")
    assert not torch.equal(a.images, test.images)


def test_compositional_split_has_no_leakage():
    train = make_dataset("pairs", 3000, held_out=HELD, distractors=0.3)
    test = make_dataset("pairs", 500, held_out=HELD, split="test")
    heldout = make_dataset("pairs", 500, held_out=HELD, split="heldout")
    assert not train.scenes.combinations() & HELD and not test.scenes.combinations() & HELD
    assert heldout.scenes.combinations() <= HELD and len(heldout.scenes.combinations()) == len(HELD)
    mentioned = {(o["color"], o["shape"]) for t in train.texts for o in parse_caption(t) if "color" in o and "shape" in o}
    assert not mentioned & HELD, "a training caption mentions a held-out combination"


def test_matching_negatives_change_exactly_one_attribute_and_never_leak():
    ds = make_dataset("matching", 2000, held_out=HELD, seed=4)
    match = ds.labels["match"].numpy()
    assert 0.4 < match.mean() < 0.6
    for i, text in enumerate(ds.texts):
        (said,) = parse_caption(text)
        true = ds.scenes.objects(i)[0]
        changed = sum(said[k] != true[k] for k in ("color", "shape", "size"))
        assert changed == (0 if match[i] else 1), text
        assert (said["color"], said["shape"]) not in HELD


def test_qa_answers_are_valid_and_heldout_pairs_never_asked_in_training():
    ds = make_dataset("qa", 2000, held_out=HELD, seed=5)
    answers = [ANSWERS[a] for a in ds.labels["answer"]]
    assert set(answers) <= set(ANSWERS) and {"yes", "no", "two"} <= set(answers)
    for q in ds.texts:
        w = q.split()
        if q.startswith("is there"):
            assert (w[3], w[4]) not in HELD


def test_images_are_stored_as_uint8_and_batches_give_back_the_rendered_pixels():
    ds = make_dataset("attributes", 300, seed=6, domain="texture")
    assert ds.images.dtype == torch.uint8
    rendered = world.render_images(ds.scenes, 32, "texture")
    batch = ds.batch(torch.arange(300))
    assert batch["image"].dtype == torch.float32
    assert (batch["image"] - rendered).abs().max() <= 0.5 / 255 + 1e-6, "storage rounds to the nearest level"


@pytest.mark.parametrize("kwargs,match", [
    (dict(task="colouring"), "unknown task"), (dict(split="val"), "unknown split"),
    (dict(split="heldout"), "needs held_out"), (dict(task="matching", n_objects=2), "one-object"),
    (dict(language="de"), "'en' or 'zh'"), (dict(task="qa", language="zh"), "English only"),
    (dict(domain="night"), "unknown domain"), (dict(image_size=12), "16 to 128"),
])
def test_bad_dataset_arguments_raise(kwargs, match):
    kwargs.setdefault("task", "pairs")
    with pytest.raises(ValueError, match=match):
        make_dataset(kwargs.pop("task"), 10, **kwargs)


def test_bad_batch_size_raises():
    with pytest.raises(ValueError, match="positive integer"):
        next(make_dataset("attributes", 10).batches(0))


def test_float_images_are_what_a_batch_holds():
    data = make_dataset("attributes", 10, seed=3)
    floats = data.float_images()
    assert floats.dtype == torch.float32 and 0 <= floats.min() and floats.max() <= 1
    assert torch.equal(floats, data.batch(torch.arange(10))["image"])
