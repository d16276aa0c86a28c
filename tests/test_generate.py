"""mmlib.generate: the objectives against their formulas, the samplers against an exact answer,
classifier-free guidance at w = 0 and w = 1, the prompts, the judge and its scores."""

import math

import numpy as np
import pytest
import torch

from mmlib import generate as G
from mmlib import world
from mmlib.recipes import GeneratorRecipe
from mmlib.text import Tokenizer
from mmlib.train import Optimisation, fit_steps


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return G.TextToImage(Tokenizer.for_world(), channels=(8, 16), text_dim=16).eval()


# --- objectives ---------------------------------------------------------------------------

def test_flow_path_is_the_straight_line_from_noise_to_data():
    x, noise = torch.full((2, 3, 4, 4), 2.0), torch.full((2, 3, 4, 4), -1.0)
    point, velocity = G.flow_path(x, noise, torch.tensor([0.0, 0.25]))
    assert torch.allclose(point[0], noise[0]) and torch.allclose(point[1], torch.full((3, 4, 4), -0.25))
    assert torch.allclose(velocity, torch.full_like(x, 3.0))


def test_flow_matching_loss_is_zero_for_the_true_velocity_and_the_mse_otherwise():
    x, noise, t = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.rand(4)
    exact = G.flow_matching_loss(lambda point, t: x - noise, x, noise, t)
    zero = G.flow_matching_loss(lambda point, t: torch.zeros_like(point), x, noise, t)
    assert exact.item() == 0 and zero.item() == pytest.approx(((x - noise) ** 2).mean().item())


def test_a_data_prediction_gives_the_path_velocity_and_its_own_loss():
    x, noise, t = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2), torch.tensor([0.0, 0.5, 0.9])
    point, velocity = G.flow_path(x, noise, t)
    assert torch.allclose(G.velocity_from_data(x, point, t), velocity, atol=1e-5)
    assert G.flow_data_loss(lambda point, t: x, x, noise, t).item() == 0
    late = G.velocity_from_data(x, point, torch.full((3,), 0.999))
    assert late.abs().max() < (x - point).abs().max() / 0.05 + 1e-4, "t is capped at 0.95"


def test_ddpm_schedule_and_forward_process_follow_ho_et_al():
    schedule = G.DDPMSchedule.linear()
    assert schedule.steps == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(0.02)
    b1 = 1e-4 + (0.02 - 1e-4) / 999
    assert schedule.alphas_bar[1].item() == pytest.approx((1 - 1e-4) * (1 - b1))
    x, noise = torch.ones(2, 3), torch.full((2, 3), 2.0)
    mixed = G.ddpm_noised(x, noise, torch.tensor([0, 999]), schedule)
    a0, a_last = schedule.alphas_bar[0].item(), schedule.alphas_bar[-1].item()
    assert mixed[0, 0].item() == pytest.approx(math.sqrt(a0) + 2 * math.sqrt(1 - a0), rel=1e-5)
    assert mixed[1, 0].item() == pytest.approx(math.sqrt(a_last) + 2 * math.sqrt(1 - a_last), rel=1e-5)
    assert a_last < 1e-4, "the last step is (almost) pure noise"
    loss = G.ddpm_loss(lambda point, t: noise, x, noise, torch.tensor([3, 500]), schedule)
    assert loss.item() == 0
    with pytest.raises(ValueError, match="index the schedule"):
        G.ddpm_noised(x, noise, torch.tensor([1000, 0]), schedule)


# --- samplers: exact answers on a one-dimensional Gaussian ------------------------------------

M, S = 1.5, 0.5  # the target N(M, S^2), reached from N(0, 1)


def exact_velocity(x, t):
    """E[y - z | x_t = x] for y ~ N(M, S^2), z ~ N(0, 1), x_t = (1 - t) z + t y."""
    t = t[:, None]
    var = (1 - t) ** 2 + t ** 2 * S ** 2
    return M + (t * S ** 2 - (1 - t)) / var * (x - t * M)


def test_euler_on_the_exact_flow_lands_on_the_target_mean_and_variance():
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = G.euler(exact_velocity, noise, 200)
    assert out.mean().item() == pytest.approx(M + S * noise.mean().item(), abs=0.01)
    assert out.std().item() == pytest.approx(S * noise.std().item(), abs=0.01)
    one_step = G.euler(exact_velocity, noise, 1)  # one step lands on the mean: the blur of few steps
    assert one_step.std().item() < 0.01


def test_ddim_on_the_exact_noise_predictor_lands_on_the_target():
    schedule = G.DDPMSchedule.linear()

    def exact_noise(x, t):
        a = schedule.alphas_bar[(t * schedule.steps).round().long()][:, None]
        return (1 - a).sqrt() * (x - a.sqrt() * M) / (a * S ** 2 + 1 - a)

    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = G.ddim(exact_noise, noise, 1000, schedule)
    assert out.mean().item() == pytest.approx(M + S * noise.mean().item(), abs=0.01)
    assert out.std().item() == pytest.approx(S * noise.std().item(), abs=0.01)
    coarse = [G.ddim(exact_noise, noise, k, schedule).std().item() for k in (10, 50)]
    assert coarse[0] < coarse[1] < out.std().item(), "fewer steps: a larger discretisation error"


def test_guide_is_u_plus_w_times_c_minus_u():
    c, u = torch.tensor([3.0]), torch.tensor([1.0])
    assert [G.guide(c, u, w).item() for w in (0, 1, 2.5)] == [1.0, 3.0, 6.0]


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional(tiny):
    texts = ["a red circle", "a large blue square on the left"]
    tokens = tiny.tokens(texts)
    text, blank = tiny.condition(tokens), tiny.condition(tokens, torch.ones(2, dtype=torch.bool))
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))

    def manual(w):
        field = lambda x, t: G.guide(tiny(x, t, text), tiny(x, t, blank), w)  # noqa: E731
        return ((G.euler(field, noise, 3) + 1) / 2).clamp(0, 1)

    conditional = ((G.euler(lambda x, t: tiny(x, t, text), noise, 3) + 1) / 2).clamp(0, 1)
    unconditional = ((G.euler(lambda x, t: tiny(x, t, blank), noise, 3) + 1) / 2).clamp(0, 1)
    for w, expected in ((1.0, conditional), (0.0, unconditional), (2.5, manual(2.5))):
        got = G.generate_images(tiny, texts, steps=3, guidance=w, seed=5)
        assert torch.allclose(got, expected, atol=1e-5), w
    assert not torch.allclose(conditional, unconditional, atol=1e-4), "the caption changes the picture"


def test_sampling_is_seeded_and_checks_its_arguments(tiny):
    a = G.generate_images(tiny, ["a red circle"] * 2, steps=2, seed=3)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, G.generate_images(tiny, ["a red circle"] * 2, steps=2, seed=3))
    with pytest.raises(ValueError, match="positive integer number of steps"):
        G.generate_images(tiny, ["a red circle"], steps=0)
    with pytest.raises(ValueError, match="guidance weight"):
        G.generate_images(tiny, ["a red circle"], guidance=-1)


def test_the_batch_size_does_not_change_the_images():
    """The starting noise is drawn for all prompts at once: batching is only about speed."""
    torch.manual_seed(0)
    model = G.TextToImage(Tokenizer.for_world(), channels=(8, 16), text_dim=16).eval()
    texts = ["a red circle", "a blue star and a green cross", "a small pink square"] * 3
    whole = G.generate_images(model, texts, steps=3, seed=2)
    for batch_size in (1, 4):
        torch.testing.assert_close(G.generate_images(model, texts, steps=3, seed=2, batch_size=batch_size),
                                   whole, atol=1e-5, rtol=0)


def test_a_ddpm_model_samples_with_ddim_and_guidance():
    torch.manual_seed(0)
    model = G.TextToImage(Tokenizer.for_world(), objective="ddpm", channels=(8, 16), text_dim=16).eval()
    texts = ["a red circle", "a blue star and a green cross"]
    a = G.generate_images(model, texts, steps=4, guidance=2.0, seed=1)
    assert a.shape == (2, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, G.generate_images(model, texts, steps=4, guidance=2.0, seed=1))
    assert not torch.equal(a, G.generate_images(model, texts, steps=4, guidance=0.0, seed=1))


# --- the model ------------------------------------------------------------------------------

def test_dropped_captions_become_the_learned_blank_and_the_rest_stay(tiny):
    tokens = tiny.tokens(["a red circle", "a blue star at the top"])
    full, mixed = tiny.condition(tokens), tiny.condition(tokens, torch.tensor([False, True]))
    assert torch.equal(mixed.pooled[0], full.pooled[0]) and torch.equal(mixed.tokens[0], full.tokens[0])
    assert torch.equal(mixed.pooled[1], tiny.null_pooled) and mixed.mask[1].tolist() == [True] + [False] * 5


@pytest.mark.parametrize("objective,target", [("flow", "velocity"), ("flow", "data"), ("ddpm", "noise")])
def test_every_objective_trains_through_the_one_loop(objective, target):
    torch.manual_seed(0)
    data = G.generation_data(64, seed=3)
    model = G.TextToImage(data.tokenizer, objective=objective, channels=(8, 16), text_dim=16, target=target)
    history = fit_steps(model, data, steps=4, batch_size=16, optim=Optimisation(lr=1e-3), progress=False)
    assert len(history.loss) == 4 and all(math.isfinite(v) for v in history.loss)


def test_bad_inputs_get_clear_errors(tiny):
    with pytest.raises(ValueError, match="unknown word 'purpel'"):
        tiny.tokens(["a purpel circle"])
    with pytest.raises(ValueError, match="non-empty"):
        tiny.tokens([""])
    with pytest.raises(ValueError, match="non-empty list"):
        tiny.tokens("a red circle")
    with pytest.raises(ValueError, match="shape"):
        tiny(torch.zeros(1, 3, 32, 32), torch.zeros(1), tiny.condition(tiny.tokens(["a red circle"])))
    with pytest.raises(ValueError, match="unknown objective"):
        G.TextToImage(Tokenizer.for_world(), channels=(8, 16), objective="gan")
    with pytest.raises(ValueError, match="at least 2 scenes"):
        G.judge_data(1, two_objects=0.25)
    with pytest.raises(ValueError, match="fraction"):
        G.generation_data(10, two_objects=1.0)
    with pytest.raises(ValueError, match="predicts one of"):
        G.TextToImage(Tokenizer.for_world(), channels=(8, 16), objective="ddpm", target="data")


# --- prompts and data -----------------------------------------------------------------------

def test_prompts_parse_back_to_what_they_ask():
    assert G.parse_prompt("a large red circle in the top left") == [
        {"size": "large", "position": "top left", "color": "red", "shape": "circle"}]
    assert G.parse_prompt("a blue star") == [{"size": None, "position": None, "color": "blue", "shape": "star"}]
    two = G.parse_prompt("a red circle and a blue square")
    assert [(o["color"], o["shape"]) for o in two] == [("red", "circle"), ("blue", "square")]
    for bad, match in (("a red", "cannot read"), ("red circle", "starts with 'a'"),
                       ("a red circle in the middle", "unknown word 'middle'"),
                       ("a large red circle and a blue star", "only colours and shapes"),
                       ("a red hexagon", "unknown word 'hexagon'")):
        with pytest.raises(ValueError, match=match):
            G.parse_prompt(bad)


def test_generation_data_captions_its_scenes_and_holds_pairs_out():
    data = G.generation_data(400, seed=2)
    assert data.images.shape == (400, 3, 16, 16) and data.images.dtype == torch.uint8
    assert not data.scenes.combinations() & world.default_held_out()
    assert (data.labels["objects"] == 2).sum().item() == 100
    for i in (0, 7, 399):
        objects, asked = data.scenes.objects(i), G.parse_prompt(data.texts[i])
        assert [(o["color"], o["shape"]) for o in objects] == [(o["color"], o["shape"]) for o in asked]
        if len(objects) == 1:
            assert asked[0]["position"] in (None, objects[0]["position"])
    single = data.scenes[np.nonzero(data.scenes.count == 1)[0]]
    for v in (single.x[:, 0], single.y[:, 0]):
        assert (np.abs(v - 1 / 3) > G.MARGIN).all() and (np.abs(v - 2 / 3) > G.MARGIN).all()


# --- the judge and its scores ----------------------------------------------------------------

class StubJudge:
    """Reads what it is told to read."""

    def __init__(self, readings):
        self.readings = readings

    def read(self, images):
        return self.readings


def reading(pairs, size=0, position=4):
    n = len(pairs)
    table = torch.zeros(n, len(world.PAIRS), dtype=torch.bool)
    for i, ps in enumerate(pairs):
        for c, s in ps:
            table[i, world.PAIRS.index((c, s))] = True
    first = torch.tensor([world.PAIRS.index(ps[0]) for ps in pairs])
    return {"pairs": table, "color": first // 6, "shape": first % 6, "size": torch.full((n,), size),
            "position": torch.as_tensor(position).expand(n).clone() if np.ndim(position) == 0 else torch.tensor(position)}


def test_faithfulness_counts_every_asked_attribute_and_extra_objects():
    texts = ["a red circle", "a large red circle", "a red circle in the centre", "a blue star",
             "a red circle and a blue star"]
    read = reading([[("red", "circle")], [("red", "circle")], [("red", "circle")],
                    [("blue", "star"), ("red", "circle")], [("red", "star"), ("blue", "circle")]])
    scores = G.faithfulness(StubJudge(read), torch.zeros(5, 3, 16, 16), texts)
    # 1 right; 2 wrong size (small read); 3 right (centre = 4); 4 an extra object; 5 colours swapped
    assert scores["faithful"] == pytest.approx(2 / 5)
    assert scores["size"] == 0 and scores["position"] == 1 and scores["color"] == 1
    with pytest.raises(ValueError, match="one prompt per image"):
        G.faithfulness(StubJudge(read), torch.zeros(4, 3, 16, 16), texts)


def test_diversity_is_zero_for_copies_and_the_chance_two_differ_otherwise():
    same = reading([[("red", "circle")]] * 4, position=4)
    spread = reading([[("red", "circle")]] * 4, position=[0, 1, 2, 3])
    groups = [0, 0, 1, 1]
    assert G.diversity(StubJudge(same), torch.zeros(4), groups) == 0
    assert G.diversity(StubJudge(spread), torch.zeros(4), groups) == 1
    half = reading([[("red", "circle")]] * 4, position=[0, 0, 0, 1])
    assert G.diversity(StubJudge(half), torch.zeros(4), [0] * 4) == pytest.approx(1 - 6 / 12)
    with pytest.raises(ValueError, match="at least two"):
        G.diversity(StubJudge(same), torch.zeros(4), [0, 1, 1, 1])


def test_a_briefly_trained_judge_reads_rendered_colours_and_sizes():
    torch.manual_seed(0)
    judge = G.Judge(width=8)
    fit_steps(judge, G.judge_data(3000, seed=0, two_objects=0.25), steps=300, batch_size=64, optim=Optimisation(lr=5e-3),
              progress=False)
    scores = G.judge_accuracy(judge, G.judge_data(600, seed=9, two_objects=0.25))
    assert scores["color"] > 0.9 and scores["size"] > 0.9, scores
    with pytest.raises(ValueError, match="judge reads images"):
        judge.read(torch.zeros(2, 3, 32, 32))


# --- the book's generator -------------------------------------------------------------------

def test_the_shipped_generator_loads_and_draws_the_colour_it_is_asked_for():
    """The weights shipped with mmlib fit today's TextToImage and recipe, and the model draws:
    for 'a large red square' and 'a large blue circle', the object's pixels take the asked
    colour (the judge-free check: the most common non-background colour)."""
    model = G.pretrained_generator(device="cpu")
    assert not model.training
    images = G.generate_images(model, ["a large red square", "a large blue circle"], steps=10, guidance=3.0)
    names = list(world.COLOR_RGB) + ["background"]
    palette = torch.tensor(list(world.COLOR_RGB.values()) + [[20 / 255] * 3])
    for image, want in zip(images, ("red", "blue")):
        pixels = image.permute(1, 2, 0).reshape(-1, 1, 3)
        nearest = ((pixels - palette) ** 2).sum(2).argmin(1)
        counts = torch.bincount(nearest, minlength=len(names))
        assert counts[-1] > 128, "mostly background"
        assert names[counts[:-1].argmax()] == want, counts


def test_upsample2_is_nearest_upsampling_with_and_without_gradients():
    """Sampling takes the fast copy, training F.interpolate: the same values, bit for bit."""
    from torch.nn import functional as F

    from mmlib.generate.unet import upsample2

    x = torch.randn(3, 5, 4, 4, requires_grad=True)
    with torch.no_grad():
        fast = upsample2(x)
    slow = upsample2(x)
    assert torch.equal(fast, F.interpolate(x, scale_factor=2.0)) and torch.equal(fast, slow)
    assert slow.requires_grad and fast.shape == (3, 5, 8, 8)


def test_the_shipped_judge_reads_fresh_renders_and_refuses_other_recipes(tmp_path):
    """Chapter 8 loads the judge its recipe trains; it reads fresh one- and two-object renders
    (the chapter shows >= 0.99 per attribute), and refuses weights of another recipe."""
    from dataclasses import replace

    from mmlib.recipes import JudgeRecipe

    judge = G.pretrained_judge(device="cpu")
    scores = G.judge_accuracy(judge, G.judge_data(400, seed=11, two_objects=0.25))
    assert min(scores[a] for a in ("color", "shape", "size", "position")) >= 0.97, scores
    assert scores["pairs"] >= 0.95, scores
    assert G.judge_record()["recipe"]["steps"] == JudgeRecipe().steps
    with pytest.raises(ValueError, match="recipe.*train_judge.py"):
        G.pretrained_judge(replace(JudgeRecipe(), steps=1))
    with pytest.raises(ValueError, match="train_judge.py"):
        G.pretrained_judge(path=tmp_path / "nowhere.pt")


def test_pretrained_generator_refuses_missing_foreign_and_misfitting_weights(tmp_path):
    from dataclasses import replace

    with pytest.raises(ValueError, match="train_generator.py"):
        G.pretrained_generator(path=tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="recipe"):
        G.pretrained_generator(GeneratorRecipe(steps=1))
    with pytest.raises(ValueError, match="train_generator.py"):
        G.pretrained_generator(replace(GeneratorRecipe(), channels=(8, 16)))


def test_a_clip_recipe_needs_the_text_tower_and_keeps_it_frozen():
    from mmlib.encoders import BagOfEmbeddings

    recipe = GeneratorRecipe(steps=2, batch_size=8, examples=64, channels=(8, 16), text="clip")
    assert G.weights_path(recipe).name == "generator-clip.pt"
    with pytest.raises(ValueError, match="pretrained_clip"):
        G.train_generator(recipe, progress=False)
    with pytest.raises(ValueError, match="unknown text encoder"):
        G.weights_path(GeneratorRecipe(text="t5"))
    tower = BagOfEmbeddings(len(Tokenizer.for_world()), 64)
    before = tower.embed.weight.clone()
    model, _ = G.train_generator(recipe, progress=False, text_encoder=tower)
    assert torch.equal(model.text_encoder.embed.weight, before), "the tower must stay frozen"
    assert torch.equal(tower.embed.weight, before), "and the caller's tower untouched"
    assert not torch.equal(model.unet.stem.weight, G.train_generator(
        recipe, steps=1, progress=False, text_encoder=tower)[0].unet.stem.weight), "the U-Net learns"


def test_the_shipped_clip_conditioned_generator_cannot_tell_swapped_colours_apart():
    """Chapter 4's text tower is a bag of words: the two prompts below give the U-Net the same
    condition, so the generator draws the same picture for both (the binding lesson)."""
    model = G.pretrained_generator(GeneratorRecipe(text="clip"), device="cpu")
    one, two = (G.generate_images(model, [text], steps=4, guidance=3.0, seed=0)
                for text in ("a red circle and a blue square", "a blue circle and a red square"))
    assert torch.allclose(one, two, atol=1e-4), "a bag of words cannot bind"
    trained = G.pretrained_generator(device="cpu")  # the trainable Transformer reads the order
    one, two = (G.generate_images(trained, [text], steps=4, guidance=3.0, seed=0)
                for text in ("a red circle and a blue square", "a blue circle and a red square"))
    assert (one - two).abs().max() > 0.5


def test_train_generator_returns_its_ema_model_and_leaves_the_callers_randomness():
    recipe = GeneratorRecipe(steps=3, batch_size=8, examples=64, channels=(8, 16))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seen = []
    model, history = G.train_generator(recipe, progress=False, evaluate=lambda m: seen.append(m) or 0.0,
                                       eval_every=3)
    assert torch.equal(torch.rand(3), expected), "the caller's random numbers moved"
    assert not model.training and len(history.loss) == 3 and seen == [model]
    again, _ = G.train_generator(recipe, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b), "same recipe, same weights"


# --- closing the loop: the book's other readers ------------------------------------------------

def test_asked_pairs_reads_each_prompts_objects():
    assert G.asked_pairs(["a large red circle on the left", "a red circle and a blue square"]) == [
        {("red", "circle")}, {("red", "circle"), ("blue", "square")}]
    with pytest.raises(ValueError, match="unknown word"):
        G.asked_pairs(["a red circel"])


class _Judge:
    """Reads every image as showing exactly the pairs it was built with."""

    def __init__(self, pairs):
        self.pairs = pairs

    def read(self, images):
        rows = torch.zeros(len(images), len(world.PAIRS), dtype=torch.bool)
        for i, found in enumerate(self.pairs):
            for pair in found:
                rows[i, world.PAIRS.index(pair)] = True
        return {"pairs": rows}


def test_judged_as_asked_wants_exactly_the_prompts_objects():
    texts = ["a red circle", "a small red circle", "a red circle and a blue square", "a blue star"]
    judge = _Judge([{("red", "circle")}, {("red", "circle"), ("blue", "star")},
                    {("blue", "square"), ("red", "circle")}, {("blue", "square")}])
    assert G.judged_as_asked(judge, torch.zeros(4, 3, 16, 16), texts).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="one prompt per image"):
        G.judged_as_asked(judge, torch.zeros(3, 3, 16, 16), texts)


def test_the_exact_reader_reads_fresh_renders():
    """Analysis by synthesis reads renders it never saw: every attribute and the set of
    colour-shape pairs, for one object and for two, at least 0.97 of the time."""
    from mmlib.generate.exact import ExactReader

    reader = ExactReader()
    data = G.judge_data(240, seed=11, two_objects=0.25)
    scores = G.judge_accuracy(reader, data)
    assert min(scores[k] for k in ("color", "shape", "size", "position", "pairs")) >= 0.97, scores
    x = (data.images[:40].float() / 255).flatten(1)  # pictures searched together or one by one

    def reading(found):  # colour, shape, size and position word
        return [(*f[:3], world.position_word(f[3], f[4])) for f in found]
    assert reading(reader._nearest(x, chunk=7)) == reading(reader._nearest(x, chunk=1))
    with pytest.raises(ValueError, match="exact reader reads images"):
        reader.read(torch.zeros(2, 3, 32, 32))


def test_faithful_each_scores_each_image_as_faithfulness_averages():
    texts = ["a red circle", "a red circle and a blue square", "a blue star"]
    reader = _Judge([{("red", "circle")}, {("red", "circle")}, {("blue", "star")}])
    reader.read = _with_attributes(reader.read, color="blue", shape="star")
    right, per = G.faithful_each(reader, torch.zeros(3, 3, 16, 16), texts)
    assert right.tolist() == [False, False, True], "the lone red circle was read as a blue star"
    assert per["color"] == [False, True] and per["shape"] == [False, True]
    assert G.faithfulness(reader, torch.zeros(3, 3, 16, 16), texts)["faithful"] == pytest.approx(1 / 3)
    reading = reader.read(torch.zeros(3, 3, 16, 16))  # a reading scored without reading again
    assert G.faithful_reading(reading, texts)[0].tolist() == right.tolist()
    with pytest.raises(ValueError, match="one prompt per image"):
        G.faithful_reading(reading, texts[:2])


def test_judge_accuracy_can_read_other_images_against_the_same_truth():
    data = G.judge_data(8, seed=2, two_objects=0.0)
    reader = _Judge([set()] * 8)
    seen = []
    reader.read = _with_attributes(lambda images: seen.append(images) or {"pairs": torch.zeros(len(images), 48,
                                   dtype=torch.bool)}, color="red", shape="circle")
    blank = torch.zeros(8, 3, 16, 16)
    G.judge_accuracy(reader, data, images=blank)
    assert seen[-1] is blank
    G.judge_accuracy(reader, data)
    assert torch.equal(seen[-1], data.images.float() / 255)
    with pytest.raises(ValueError, match="one for one"):
        G.judge_accuracy(reader, data, images=blank[:3])


def _with_attributes(read, color, shape):
    def wrapped(images):
        out = read(images)
        n = len(images)
        out.update(color=torch.full((n,), world.COLORS.index(color)),
                   shape=torch.full((n,), world.SHAPES.index(shape)),
                   size=torch.zeros(n, dtype=torch.long), position=torch.zeros(n, dtype=torch.long))
        return out
    return wrapped


def test_degraded_blurs_keeps_flat_regions_and_noises_reproducibly():
    from mmlib.generate.exact import degraded

    images = torch.zeros(2, 3, 16, 16)
    images[:, :, 4:12, 4:12] = 1.0
    blurred = degraded(images, blur=0.8)
    assert torch.allclose(blurred[:, :, 7, 7], torch.ones(2, 3)), "the middle of a flat square stays"
    assert 0 < blurred[0, 0, 4, 3] < 1, "an edge is smeared"
    assert torch.equal(degraded(images), images), "no blur, no noise: unchanged"
    noisy = degraded(images, noise=0.1, seed=3)
    assert torch.equal(noisy, degraded(images, noise=0.1, seed=3)) and not torch.equal(noisy, images)
    assert noisy.min() >= 0 and noisy.max() <= 1
    with pytest.raises(ValueError, match=">= 0"):
        degraded(images, blur=-1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degraded(images[0])
