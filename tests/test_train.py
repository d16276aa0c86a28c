"""mmlib.train: the one loop. Schedule, parameter groups, exact resume, hooks, the loss contract,
and the cached CLIP recipe."""

import math

import pytest
import torch
from torch import nn

from mmlib.data import make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.models import DualEncoder, MultimodalModel
from mmlib.train import (EMA, Checkpointing, History, Optimisation, classification_terms, fit_steps, learning_rate,
                         parameter_groups)
from mmlib.notebook import seconds_per_step


@pytest.fixture(scope="module")
def pairs():
    return make_dataset("pairs", 96, seed=4)


def small_clip(vocab, seed=0):
    torch.manual_seed(seed)
    return DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(vocab, 16), embed_dim=8)


def test_learning_rate_warms_up_linearly_then_decays_by_a_cosine():
    rates = [learning_rate(s, 100, 1.0, warmup=0.1) for s in range(100)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[10] == pytest.approx(1.0)
    assert rates[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 1e-3


def test_no_weight_decay_on_biases_norms_and_the_logit_scale():
    model = small_clip(20)
    groups = parameter_groups(model, weight_decay=0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "log_scale" not in names and "bias" not in names
    assert not any(n.endswith(".bias") or ".1." in n for n in names), "conv biases and BatchNorm gains"
    assert "image_proj.weight" in names and "image_encoder.net.0.weight" in names
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable, "every trainable parameter, once"


def test_learning_rate_multipliers_and_zero_freezes(pairs):
    model = small_clip(len(pairs.tokenizer))
    groups = parameter_groups(model, lr_scale={"image_encoder": 0.1, "image_encoder.net.0": 0.0})
    first_conv = dict(model.named_parameters())["image_encoder.net.0.weight"]
    assert not first_conv.requires_grad, "a multiplier of 0 freezes"
    scales = {g["lr_scale"] for g in groups}
    assert scales == {0.1, 1.0}
    before = first_conv.detach().clone()
    other = dict(model.named_parameters())["image_encoder.net.4.weight"].detach().clone()
    fit_steps(model, pairs, steps=3, batch_size=32, progress=False, device="cpu",
              optim=Optimisation(lr=1e-2, lr_scale={"image_encoder": 0.1, "image_encoder.net.0": 0.0}))
    assert torch.equal(first_conv, before)
    assert not torch.equal(dict(model.named_parameters())["image_encoder.net.4.weight"], other)
    with pytest.raises(ValueError, match="not submodules"):
        parameter_groups(model, lr_scale={"vision": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        parameter_groups(model, lr_scale={"image_encoder": -1})


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(pairs, tmp_path):
    """With modality dropout (random numbers in every step), so the random state must resume too."""
    def model():
        torch.manual_seed(1)
        return MultimodalModel({"image": ImageCNN(16, channels=(8,)), "text": BagOfEmbeddings(len(pairs.tokenizer), 16)},
                               n_classes=8, fusion="concat", modality_dropout=0.3)

    def loss_of(m):
        return lambda batch: classification_terms(m(batch), batch["color"])

    options = dict(steps=8, batch_size=20, optim=Optimisation(lr=1e-2), drop_last=False, progress=False, device="cpu")
    whole = model()
    full = fit_steps(whole, pairs, loss=loss_of(whole), **options)
    part = model()
    path = tmp_path / "run.pt"
    fit_steps(part, pairs, loss=loss_of(part), checkpoint=Checkpointing(path, stop_at=5), **options)
    resumed = model()
    history = fit_steps(resumed, pairs, loss=loss_of(resumed), checkpoint=Checkpointing(path, resume=True), **options)
    assert history.loss == full.loss
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_hooks_run_after_every_step_and_the_scale_is_clamped(pairs):
    model = small_clip(len(pairs.tokenizer))
    with torch.no_grad():
        model.log_scale.fill_(math.log(99.9))
    calls = []
    fit_steps(model, pairs, steps=4, batch_size=32, optim=Optimisation(lr=0.5, warmup=0.0), progress=False, device="cpu",
              hooks=[lambda m, step: calls.append((step, m.scale.item()))])
    assert [s for s, _ in calls] == [0, 1, 2, 3]
    assert all(scale <= 100.0 + 1e-4 for _, scale in calls), "after_step clamps before the hooks see it"


def test_seconds_per_step_times_a_training_pass_and_leaves_the_model_as_it_was(pairs):
    """A forward and backward pass, timed (a positive number of seconds); afterwards no
    gradients and the caller's mode; bad sizes are refused."""
    model = small_clip(len(pairs.tokenizer)).eval()
    assert seconds_per_step(model, pairs, 32, repeat=3, device="cpu") > 0
    assert not model.training and all(p.grad is None for p in model.parameters())
    for bad in (0, 97):
        with pytest.raises(ValueError, match="batch_size"):
            seconds_per_step(model, pairs, bad)
    with pytest.raises(ValueError, match="repeat"):
        seconds_per_step(model, pairs, 8, repeat=0)


def test_ema_is_the_moving_average_of_the_weights():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema(model, 0)
    assert torch.allclose(ema.model.weight, start + 1.0), "halfway from the old weights to the new"
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EMA(model, decay=1.0)


def test_evaluations_every_n_steps_and_at_the_end(pairs):
    model = small_clip(len(pairs.tokenizer))
    history = fit_steps(model, pairs, steps=5, batch_size=32, optim=Optimisation(lr=1e-3), progress=False, device="cpu",
                        evaluate=lambda m: float(m.training), eval_every=2)
    assert history.evals == [(64, 0.0), (128, 0.0), (160, 0.0)], "in evaluation mode, after steps 2, 4, 5"
    assert model.training is False and len(history.terms["scale"]) == 5


def test_history_means_per_epoch():
    history = History(loss=[1.0, 3.0, 5.0, 7.0, 9.0], terms={"accuracy": [0, 1, 1, 1, 0.5]}, steps_per_epoch=2)
    assert history.per_epoch() == [2.0, 6.0, 9.0]
    assert history.train_acc == [0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="nothing called 'recall'"):
        history.per_epoch("recall")


def test_the_loop_explains_bad_input(pairs, tmp_path):
    model = small_clip(len(pairs.tokenizer))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        fit_steps(model, pairs, steps=0, batch_size=8)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        Optimisation(lr=0.0)
    with pytest.raises(ValueError, match="warmup is a fraction"):
        Optimisation(warmup=1.5)
    with pytest.raises(ValueError, match="clip_grad > 0"):
        Optimisation(clip_grad=0)
    with pytest.raises(ValueError, match="optim is an Optimisation"):
        fit_steps(model, pairs, steps=1, batch_size=8, optim=1e-3)
    with pytest.raises(ValueError, match="no loss\\(batch\\) method"):
        fit_steps(nn.Linear(2, 2), pairs, steps=1, batch_size=8)
    with pytest.raises(ValueError, match="a 'loss' entry"):
        fit_steps(model, pairs, steps=1, batch_size=8, loss=lambda b: torch.tensor(1.0), progress=False)
    with pytest.raises(ValueError, match="larger than the dataset"):
        fit_steps(model, pairs, steps=1, batch_size=500)
    with pytest.raises(ValueError, match="needs an existing checkpoint"):
        fit_steps(model, pairs, steps=1, batch_size=8, checkpoint=Checkpointing(tmp_path / "none.pt", resume=True))


def test_pretrained_clip_is_cached_and_the_same_either_way(monkeypatch, tmp_path):
    from mmlib.checkpoint import cache_dir
    from mmlib.pretrain import pretrained_clip
    from mmlib.recipes import ClipRecipe

    monkeypatch.setenv("MMLIB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    recipe = ClipRecipe(pairs=256, width=16, epochs=1, batch_size=64)
    torch.manual_seed(123)
    trained = pretrained_clip(recipe, device="cpu", progress=False)
    after_training = torch.rand(3)
    assert len(list(tmp_path.glob("clip-*.pt"))) == 1
    torch.manual_seed(123)
    loaded = pretrained_clip(recipe, device="cpu", progress=False)
    assert torch.equal(torch.rand(3), after_training), "loading or training leaves the caller's random numbers"
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    pretrained_clip(ClipRecipe(pairs=256, width=16, epochs=1, batch_size=64, seed=1), device="cpu", progress=False)
    assert len(list(tmp_path.glob("clip-*.pt"))) == 2, "another recipe, other weights"


def test_train_clip_fills_the_cache_that_pretrained_clip_reads(monkeypatch, tmp_path):
    """Chapter 4's visible run *is* the cached model: after train_clip, pretrained_clip loads the
    same weights and trains nothing."""
    import mmlib.pretrain as pretrain
    from mmlib.recipes import ClipRecipe

    monkeypatch.setenv("MMLIB_CACHE", str(tmp_path))
    recipe = ClipRecipe(pairs=128, width=16, epochs=1, batch_size=64)
    trained, history = pretrain.train_clip(recipe, device="cpu", progress=False)
    assert len(history.loss) == 2 and len(list(tmp_path.glob("clip-*.pt"))) == 1
    monkeypatch.setattr(pretrain, "fit_steps", lambda *a, **k: pytest.fail("trained again"))
    loaded = pretrain.pretrained_clip(recipe, device="cpu")
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_cache_key_follows_the_code_not_its_docstrings_or_comments(tmp_path, monkeypatch):
    import sys

    from mmlib.checkpoint import cached_path, code_fingerprint

    package = tmp_path / "toy_recipe_code"
    package.mkdir()
    module = package / "__init__.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def fingerprint(source):
        module.write_text(source)
        sys.modules.pop("toy_recipe_code", None)
        return code_fingerprint(["toy_recipe_code"])

    base = fingerprint('"""A toy."""\n\ndef f(x):\n    """Double."""\n    return 2 * x\n')
    assert fingerprint('"""Another docstring."""\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # note\n') == base
    assert fingerprint('"""A toy."""\n\ndef f(x):\n    """Double."""\n    return 3 * x\n') != base
    monkeypatch.setenv("MMLIB_CACHE", str(tmp_path / "cache"))
    one = cached_path("clip", {"seed": 0}, ["toy_recipe_code"])
    assert one != cached_path("clip", {"seed": 1}, ["toy_recipe_code"]), "another recipe, another file"
    assert one.parent == tmp_path / "cache" and one.name.startswith("clip-")
    with pytest.raises(ValueError, match="no module"):
        code_fingerprint(["no_such_module_here"])

    def first():
        def f(x):
            """Twice x."""
            return 2 * x
        return f

    def second():
        def f(x):  # the same code, another docstring and a comment
            """Double it."""
            return 2 * x
        return f

    def third():
        def f(x):
            """Twice x."""
            return 3 * x
        return f

    assert code_fingerprint([first()]) == code_fingerprint([second()]), "a function counts by its code"
    assert code_fingerprint([first()]) != code_fingerprint([third()])
