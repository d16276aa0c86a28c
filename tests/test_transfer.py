"""mmlib.transfer: freezing and locking, the adaptation strategies, the sound-as-image bridge, and
Chinese zero-shot prompts."""

import math

import pytest
import torch

from mmlib import world
from mmlib.data import few_shot_indices, make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.metrics import linear_probe
from mmlib.models import BagOfWordsModel, DualEncoder
from mmlib.zeroshot import CHINESE_PROMPT_TEMPLATES, class_names, zero_shot_scores
from mmlib.text import Tokenizer
from mmlib.freezing import count_trainable, freeze, lock, unfreeze, unlock
from mmlib.train import evaluate
from mmlib.transfer import (Classifier, SoundAsImage, adapt, compare_strategies, extract_features,
                            reinitialise, zero_shot_equivalent_shots)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return ImageCNN(dim=16, channels=(8, 8))


@pytest.fixture(scope="module")
def shapes_data():
    return make_dataset("attributes", 120, seed=3, shapes=("circle", "square", "triangle"))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_freeze_unfreeze_and_count():
    enc = small_cnn()
    total = sum(p.numel() for p in enc.parameters())
    assert count_trainable(enc) == total
    assert count_trainable(freeze(enc)) == 0
    assert count_trainable(unfreeze(enc)) == total


def test_lock_keeps_a_tower_in_eval_mode_and_its_statistics_fixed():
    enc = small_cnn()
    parent = torch.nn.ModuleDict({"tower": enc})
    lock(enc)
    parent.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    stats = enc.net[1].running_mean.clone()
    enc(torch.rand(8, 3, 32, 32))
    assert torch.equal(enc.net[1].running_mean, stats), "a locked tower must not update BatchNorm statistics"
    assert count_trainable(enc) == 0
    unlock(enc)
    parent.train()
    assert enc.training and count_trainable(enc) > 0


def test_reinitialise_forgets_weights_and_statistics_reproducibly():
    enc = small_cnn()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
        enc.net[1].running_mean.fill_(3.0)
    before = params(enc)
    reinitialise(enc, seed=5)
    assert not same(before, params(enc))
    assert torch.equal(enc.net[1].running_mean, torch.zeros_like(enc.net[1].running_mean))
    assert torch.equal(enc.pos, torch.zeros_like(enc.pos))
    again = reinitialise(small_cnn(seed=9), seed=5)
    assert same(params(enc), params(again)), "same seed, same fresh weights"


def test_classifier_frozen_statistics_and_bad_arguments():
    model = Classifier(small_cnn(), 3, frozen_statistics=True).train()
    assert model.head.training
    assert not any(m.training for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert Classifier(small_cnn(), 3).train().encoder.net[1].training
    assert model({"image": torch.rand(2, 3, 32, 32)}).shape == (2, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Classifier(small_cnn(), 1)


def test_linear_probe_strategy_is_the_probe_on_frozen_features(shapes_data):
    enc = small_cnn()
    before = params(enc)
    model = adapt(enc, shapes_data, "shape", 3, "linear_probe", device="cpu")
    assert same(before, params(enc)), "adapt must not modify the encoder it was given"
    assert same(before, params(model.encoder)) and count_trainable(model.encoder) == 0
    features, labels = extract_features(enc, shapes_data), shapes_data.labels["shape"]
    reference = linear_probe(features, labels, 3)

    def objective(head):  # the convex problem both solve: their optima must agree
        return (torch.nn.functional.cross_entropy(head(features), labels) + 1e-3 * head.weight.pow(2).sum()).item()

    assert objective(model.head) == pytest.approx(objective(reference), rel=1e-3)
    assert objective(model.head) < objective(torch.nn.Linear(16, 3))


@pytest.mark.parametrize("strategy", ["fine_tune", "lp_ft", "scratch"])
def test_gradient_strategies_train_a_copy(shapes_data, strategy):
    enc = small_cnn()
    before = params(enc)
    model = adapt(enc, shapes_data, "shape", 3, strategy, steps=5, device="cpu")
    assert same(before, params(enc)), "the pretrained encoder must stay as it was"
    assert not same(before, params(model.encoder)), f"{strategy} should change the encoder's copy"
    assert not model.training
    # One normalisation policy for every pretrained start (LP-FT and fine-tuning
    # differ in the head's initialisation only, as in Kumar et al.).
    assert model.frozen_statistics == (strategy != "scratch")


def test_scratch_does_not_start_from_the_pretrained_weights(shapes_data):
    enc = small_cnn()
    copy_of = reinitialise(small_cnn(), seed=0)
    model = adapt(enc, shapes_data, "shape", 3, "scratch", steps=1, lr=1e-9, device="cpu")
    # after one step with a negligible learning rate, the weights are the re-initialised ones
    close = [torch.allclose(a, b, atol=1e-6) for a, b in zip(params(model.encoder), params(copy_of))]
    assert all(close)


def test_adapt_rejects_bad_arguments(shapes_data):
    enc = small_cnn()
    with pytest.raises(ValueError, match="unknown strategy"):
        adapt(enc, shapes_data, "shape", 3, "finetune")
    with pytest.raises(ValueError, match="no label 'colour'"):
        adapt(enc, shapes_data, "colour", 3, "fine_tune")
    with pytest.raises(ValueError, match="steps"):
        adapt(enc, shapes_data, "shape", 3, "fine_tune", steps=0)


def test_compare_strategies_table_and_models(shapes_data):
    test = make_dataset("attributes", 60, split="test", seed=3, shapes=("circle", "square", "triangle"))
    table, models = compare_strategies(small_cnn(), shapes_data, test, "shape", 3, ks=(2, 1),
                                       strategies=("linear_probe", "scratch"), steps=2, progress=False, device="cpu")
    assert set(table) == {"linear_probe", "scratch"} and list(table["scratch"]) == [1, 2]
    assert set(models) == {"linear_probe", "scratch"}
    for strategy, model in models.items():  # the table reports each model's test accuracy at the largest k
        assert table[strategy][2] == round(evaluate(model, test, "shape"), 3)
    with pytest.raises(ValueError, match="unknown strategies"):
        compare_strategies(small_cnn(), shapes_data, test, "shape", 3, (1,), strategies=("probe",))
    with pytest.raises(ValueError, match="positive integers"):
        compare_strategies(small_cnn(), shapes_data, test, "shape", 3, ks=(0, 4))
    with pytest.raises(ValueError, match="fewer than k"):
        compare_strategies(small_cnn(), shapes_data, test, "shape", 3, ks=(1000,), progress=False)


def test_few_shot_subsets_are_balanced(shapes_data):
    few = shapes_data.subset(few_shot_indices(shapes_data.labels["shape"], 4, seed=2))
    assert torch.bincount(few.labels["shape"]).tolist() == [4, 4, 4]


def test_sound_as_image_draws_pitch_upwards():
    t = torch.arange(4000) / world.SAMPLE_RATE
    waves = torch.stack([torch.sin(2 * math.pi * 300 * t), torch.sin(2 * math.pi * 2500 * t)])
    ear = SoundAsImage(small_cnn())
    images = ear.to_image(waves)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    low_row, high_row = (images[i, 0].mean(1).argmax().item() for i in range(2))
    assert high_row < low_row, "a higher pitch must appear higher in the picture (smaller row index)"
    assert ear(waves).shape == (2, 16) and ear.dim == 16
    with pytest.raises(ValueError, match=r"\(B, samples\)"):
        ear.to_image(torch.zeros(4000))


def test_zero_shot_equivalent_shots_interpolates_in_log_k():
    probe = {1: 0.2, 2: 0.4, 4: 0.6}
    assert zero_shot_equivalent_shots(0.5, probe) == pytest.approx(math.sqrt(8))
    assert zero_shot_equivalent_shots(0.1, probe) == 0.0
    assert zero_shot_equivalent_shots(0.2, probe) == 1.0
    assert zero_shot_equivalent_shots(0.9, probe) == 4.0
    with pytest.raises(ValueError):
        zero_shot_equivalent_shots(0.5, {})


def test_chinese_zero_shot_prompts():
    zh = Tokenizer.for_world("zh", strict=True)
    for template in CHINESE_PROMPT_TEMPLATES:  # every prompt is made of known characters
        zh.encode(template.format("红色圆形"))
    assert class_names([("red", "circle")], "zh") == ["红色圆形"]
    with pytest.raises(ValueError, match="language"):
        class_names([("red", "circle")], "fr")
    torch.manual_seed(0)
    model = DualEncoder(small_cnn(), BagOfEmbeddings(len(zh), 8), embed_dim=8)
    scores = zero_shot_scores(model, torch.rand(3, 3, 32, 32), [("red", "circle"), ("blue", "star")], zh, language="zh")
    assert scores.shape == (3, 2)
    with pytest.raises(ValueError, match="contrastive"):
        zero_shot_scores(BagOfWordsModel(small_cnn(), zh), torch.rand(2, 3, 32, 32), [("red", "circle")], zh,
                         language="zh")
