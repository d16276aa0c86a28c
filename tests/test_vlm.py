"""mmlib.lm and mmlib.vlm: the causal LM, its cache, chat data with masked loss, connectors,
gated cross-attention at initialisation, LoRA, and the hallucination metrics on known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from mmlib import shipped, world
from mmlib.encoders import ImageCNN
from mmlib.lm import LanguageModel
from mmlib.vlm import (CONNECTORS, InstructionResampler, LoRALinear, Resampler,
                       VisionLanguageModel, accuracy_by_type, add_lora, chair, chat_sequences, chat_tokenizer,
                       DESCRIBE, description_data, description_scores, descriptions_of, instruction_data,
                       make_connector, merge_lora, mix, pope_probes, pope_scores, question_type)


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer()


def small_lm(vocab, seed=0):
    torch.manual_seed(seed)
    return LanguageModel(vocab, dim=32, depth=2, heads=4, max_len=96)


def small_vlm(tok, connector="instruction", seed=0):
    torch.manual_seed(seed)
    vision = ImageCNN(16, channels=(8, 16))
    return VisionLanguageModel(vision, make_connector(connector, 16, 32), small_lm(len(tok), seed), tok)


# --- the language model ------------------------------------------------------------------

def test_the_language_model_loss_is_next_token_cross_entropy_without_padding():
    """By hand: each position's log-probability of the token after it, averaged over the
    positions whose next token is not padding."""
    torch.manual_seed(0)
    lm = LanguageModel(12, dim=16, depth=1, heads=2, max_len=8, pad_id=0)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    logits, _ = lm(tokens)
    logp = logits.log_softmax(-1)
    terms = [-logp[b, t, tokens[b, t + 1]] for b in range(2) for t in range(4) if tokens[b, t + 1] != 0]
    assert len(terms) == 6
    assert lm.loss({"tokens": tokens})["loss"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    every = [-logp[b, t, tokens[b, t + 1]] for b in range(2) for t in range(4)]
    unpadded = LanguageModel(12, dim=16, depth=1, heads=2, max_len=8)  # no pad_id: every token counts
    unpadded.load_state_dict(lm.state_dict())
    assert unpadded.loss({"tokens": tokens})["loss"].item() == pytest.approx(torch.stack(every).mean().item(),
                                                                             rel=1e-5)
    with pytest.raises(ValueError, match="pad_id 12 is not a token"):
        LanguageModel(12, 16, 1, 2, 8, pad_id=12)


def test_changing_a_later_token_never_changes_an_earlier_logit():
    lm = small_lm(20).eval()
    x = torch.randint(0, 20, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 20
    a, _ = lm(x)
    b, _ = lm(y)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_cached_and_uncached_generation_agree():
    lm = small_lm(20).eval()
    prompt, prefix = torch.randint(0, 20, (3, 5)), torch.randn(3, 4, 32)
    for sampling in ({}, {"temperature": 0.8, "top_k": 5}):
        runs = [lm.generate(prompt, 8, prefix=prefix, use_cache=c, generator=torch.Generator().manual_seed(1),
                            **sampling) for c in (True, False)]
        assert torch.equal(runs[0][0], runs[1][0]), "the same tokens"
        assert torch.allclose(runs[0][1], runs[1][1], atol=1e-5), "from the same logits"


def test_generation_stops_at_eos_and_checks_its_arguments():
    lm = small_lm(20).eval()
    with torch.no_grad():  # the final norm always outputs the direction of token 7's embedding ...
        lm.norm.weight.zero_()
        lm.norm.bias.copy_(lm.tokens.weight[7] * 100)
    new, _ = lm.generate(torch.zeros(2, 3, dtype=torch.long), 5, eos_id=7)
    assert new.shape == (2, 1) and (new == 7).all(), "... which is <eos>: the reply ends at once"
    with pytest.raises(ValueError, match="max_new"):
        lm.generate(torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="longer than max_len"):
        lm(torch.zeros(1, 97, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm(torch.full((1, 3), 20))


def test_the_output_head_is_tied_to_the_token_embedding():
    lm = small_lm(20)
    assert lm.head.weight is lm.tokens.weight


# --- chat data and the masked loss ---------------------------------------------------------

def test_chat_sequences_mark_where_the_answer_starts(tok):
    tokens, start = chat_sequences(tok, ["what colour is the square ?", "how many shapes are there ?"],
                                   ["red", "two"])
    first = tok.decode(tokens[0], skip_special=False).split()
    assert first[:2] == ["<user>", "what"] and first[int(start[0]) - 1] == "<assistant>"
    assert tok.decode(tokens[0, start[0]:]) == "red" and tokens[0, start[0] + 1] == tok.eos_id
    with pytest.raises(ValueError, match="instruction is empty"):
        chat_sequences(tok, ["  "])
    with pytest.raises(ValueError, match="unknown token 'magenta'"):
        chat_sequences(tok, ["what colour is the magenta square ?"])


def test_the_loss_covers_only_the_assistants_tokens(tok):
    data = instruction_data(8, seed=1, tokenizer=tok)
    model = small_vlm(tok).eval()
    batch = data.batch(torch.arange(8))
    with torch.no_grad():
        logits = model(batch["image"], batch["tokens"])
        terms = []  # by hand: every answer token and <eos>, predicted from the position before it
        for row, start in enumerate(batch["answer_start"].tolist()):
            for j in range(start, int(batch["lengths"][row])):
                terms.append(-logits[row, j - 1].log_softmax(-1)[batch["tokens"][row, j]])
        assert torch.isclose(model.loss(batch)["loss"], torch.stack(terms).mean(), atol=1e-5)
    r, c = (batch["tokens"] == tok.pad_id).nonzero()[0].tolist()
    padded = batch["tokens"].clone()
    padded[r, c] = tok.stoi["red"]  # a token after <eos> changes no earlier logit
    assert torch.allclose(model(batch["image"], padded)[r, :c], logits[r, :c], atol=1e-5)


def test_instruction_data_labels_are_the_worlds_truth(tok):
    data = instruction_data(50, seed=2, tokenizer=tok)
    for i in range(50):
        kind = world.QUESTION_TYPES[int(data.labels["qtype"][i])]
        assert question_type(data.texts[i]) == kind
        start = int(data.labels["answer_start"][i])
        reply = tok.decode(data.tokens[i, start:])
        if kind == "count":
            assert reply == world.NUMBER_WORDS[int(data.scenes.count[i])]


# --- connectors -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in CONNECTORS if n != "cross_attention"])
def test_connectors_map_regions_to_lm_tokens(name):
    connector = make_connector(name, 16, 32)
    out = connector(torch.randn(3, 64, 16), torch.randn(3, 32))
    assert out.shape == (3, connector.tokens_for(64), 32)


def test_pooling_averages_each_block_of_the_grid():
    connector = make_connector("linear", 1, 1, pool=2)
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 grid, row by row
    assert connector.pooled(grid).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert connector(torch.randn(2, 64, 1)).shape == (2, 16, 1) and connector.tokens_for(64) == 16
    with pytest.raises(ValueError, match="square grid"):
        connector(torch.randn(2, 63, 1))
    with pytest.raises(ValueError, match="pool"):
        make_connector("mlp", 4, 4, pool=0)


def test_pixel_shuffle_stacks_each_block_of_the_grid_whole():
    connector = make_connector("mlp", 2, 8, pool=2, merge="stack")
    regions = torch.randn(3, 64, 2)
    grid = regions.transpose(1, 2).reshape(3, 2, 8, 8)  # (B, d, 8, 8)
    stacked = connector.pooled(regions)  # (B, 16, 4 d)
    assert stacked.shape == (3, 16, 8) and connector.tokens_for(64) == 16
    for token, (row, col) in ((0, (0, 0)), (5, (2, 2)), (15, (6, 6))):
        block = grid[:, :, row:row + 2, col:col + 2].reshape(3, 2, 4)
        assert torch.equal(stacked[:, token].reshape(3, 2, 4), block), "each block's 4 features, all kept"
    assert connector(regions).shape == (3, 16, 8)
    with pytest.raises(ValueError, match="merge"):
        make_connector("linear", 2, 8, pool=2, merge="max")


def test_stage_one_trains_the_connector_alone(tok):
    from dataclasses import replace

    from mmlib.recipes import LLAVA_RECIPES
    from mmlib.vlm import align, alignment_data, tune

    recipe = replace(LLAVA_RECIPES["two stages"], alignment_steps=3, alignment_descriptions=64, steps=2,
                     questions=64, batch_size=16)
    data = alignment_data(recipe, tok)
    assert len(data) == 64 and all(text.startswith(DESCRIBE) for text in data.texts[:5])
    model = small_vlm(tok, "mlp")
    lm, connector = ([p.clone() for p in m.parameters()] for m in (model.lm, model.connector))
    history = align(model, data, recipe, progress=False, device="cpu")
    assert len(history.loss) == 3
    assert all(torch.equal(a, b) for a, b in zip(model.lm.parameters(), lm)), "the LM stayed frozen"
    assert not all(torch.equal(a, b) for a, b in zip(model.connector.parameters(), connector))
    assert all(p.requires_grad for p in model.lm.parameters()), "and is trainable again for stage 2"
    tune(model, instruction_data(64, tokenizer=tok), recipe, progress=False, device="cpu")
    assert not all(torch.equal(a, b) for a, b in zip(model.lm.parameters(), lm))
    with pytest.raises(ValueError, match="no stage 1"):
        align(model, data, replace(recipe, alignment_steps=0), progress=False)
    with pytest.raises(ValueError, match="alignment_steps"):
        replace(recipe, alignment_steps=-1)


def test_a_resampler_gives_m_tokens_whatever_the_grid():
    for regions in (16, 64):
        assert Resampler(16, 32, m=4, regions=regions)(torch.randn(2, regions, 16)).shape == (2, 4, 32)
    with pytest.raises(ValueError, match="unknown connector"):
        make_connector("qformer", 16, 32)


def test_the_instruction_resampler_reads_the_instruction():
    torch.manual_seed(0)
    connector = InstructionResampler(16, 32)
    regions = torch.randn(2, 64, 16)
    a, b = connector(regions, torch.randn(2, 32)), connector(regions, torch.randn(2, 32))
    assert not torch.allclose(a, b), "another question, other visual tokens"
    with pytest.raises(ValueError, match="needs the instruction"):
        connector(regions)


def test_gated_cross_attention_is_the_identity_at_initialisation(tok):
    model = small_vlm(tok, "cross_attention").eval()
    tokens, _ = chat_sequences(tok, ["how many shapes are there ?"] * 2)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        with_image = model(images, tokens)
        text_only, _ = model.lm(tokens)
    assert torch.equal(with_image, text_only), "tanh(0) = 0: the LM is unchanged"
    with torch.no_grad():
        model.connector.blocks[0].attn_gate.fill_(1.0)
    assert not torch.allclose(model(images, tokens), text_only), "once the gate opens, the image counts"


def test_blind_and_bad_input(tok):
    import matplotlib
    matplotlib.use("Agg")
    from mmlib.vlm import chat

    model = small_vlm(tok)
    image = torch.rand(3, 32, 32)
    reply = chat(model, image, "how many shapes are there ?")
    assert reply == model.answer(image[None], ["how many shapes are there ?"])[0], "chat is answer, one image"
    import matplotlib.pyplot as plt
    assert plt.gcf().axes[0].get_title().endswith(reply), "the exchange is the figure's title"
    plt.close("all")
    with pytest.raises(ValueError, match=r"one image of shape \(3, H, W\)"):
        chat(model, torch.rand(1, 3, 32, 32), "how many shapes are there ?")
    with pytest.raises(ValueError, match="ask a question"):
        chat(model, torch.rand(3, 32, 32), "")
    prompt, _ = chat_sequences(tok, ["how many shapes are there ?"])
    new, _ = model.lm.generate(prompt, 12, eos_id=tok.eos_id)
    ids = new[0].tolist()
    alone = tok.decode(ids[:ids.index(tok.eos_id)] if tok.eos_id in ids else ids)
    assert model.answer(None, ["how many shapes are there ?"]) == [alone], "blind: the LM alone"
    with pytest.raises(ValueError, match="did you forget the batch dimension"):
        model.answer(torch.rand(3, 32, 32), ["how many shapes are there ?"])
    with pytest.raises(ValueError, match="unknown token"):
        model.answer(torch.rand(1, 3, 32, 32), ["what is the meaning of life ?"])
    with pytest.raises(ValueError, match="role tokens"):
        from mmlib.text import Tokenizer
        VisionLanguageModel(ImageCNN(16, channels=(8,)), make_connector("mlp", 16, 32), small_lm(len(tok)),
                            Tokenizer.for_world())


def test_a_vlm_learns_to_count_in_a_few_steps(tok):
    from mmlib.train import Optimisation, fit_steps

    data = instruction_data(256, seed=3, question_types=("count",), tokenizer=tok)
    model = small_vlm(tok, "mlp")
    history = fit_steps(model, data, steps=40, batch_size=64, optim=Optimisation(lr=3e-3), progress=False, device="cpu")
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert not any(p.requires_grad for p in model.vision.parameters()), "the vision tower stayed frozen"


@pytest.mark.parametrize("name", ["instruction", "cross_attention"])
def test_cached_region_features_give_the_same_loss(tok, name):
    data = instruction_data(24, seed=4, tokenizer=tok)
    model = small_vlm(tok, name).eval()
    for block in model.adapters() or []:  # open Flamingo's gates, so the image counts
        nn.init.constant_(block.attn_gate, 1.0)
    cached = model.with_regions(data, batch_size=10, dtype=torch.float32)
    assert cached.labels["regions"].shape == (24, 64, 16)  # 8 x 8 grid of 16-dim features
    batch = cached.batch(torch.arange(8, 16))
    plain = {k: v for k, v in batch.items() if k != "regions"}
    assert torch.allclose(model.loss(batch)["loss"], model.loss(plain)["loss"], atol=1e-6)
    batch["regions"] = torch.randn_like(batch["regions"])  # it reads the cache
    assert not torch.allclose(model.loss(batch)["loss"], model.loss(plain)["loss"])


def test_cached_region_features_need_a_frozen_tower(tok):
    torch.manual_seed(0)
    model = VisionLanguageModel(ImageCNN(16, channels=(8, 16)), make_connector("mlp", 16, 32),
                                small_lm(len(tok)), tok, freeze_vision=False)
    with pytest.raises(ValueError, match="frozen vision encoder"):
        model.with_regions(instruction_data(8, tokenizer=tok))


# --- LoRA -----------------------------------------------------------------------------------

def test_lora_starts_as_the_base_layer_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    lora = LoRALinear(base, r=2, alpha=4)
    x = torch.randn(5, 8)
    assert torch.equal(lora(x), base(x)), "B = 0: nothing changes at the start"
    with torch.no_grad():
        lora.B.normal_()
    assert torch.allclose(lora.merged()(x), lora(x), atol=1e-5)


def test_add_lora_trains_only_the_adapters():
    lm = small_lm(20)
    total = sum(p.numel() for p in lm.parameters())
    add_lora(lm, r=2)
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    assert sum(p.numel() for p in lm.parameters() if p.requires_grad) < 0.2 * total
    x = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1)
        before, _ = lm(x)
        merge_lora(lm)
        after, _ = lm(x)
    assert not any(isinstance(m, LoRALinear) for m in lm.modules())
    assert torch.allclose(before, after, atol=1e-5)


# --- hallucination metrics on known answers ---------------------------------------------------

def scenes_of(*objects):
    """One scene per list of (colour, shape) pairs."""
    n, k = len(objects), max(map(len, objects))
    scenes = world.sample_scenes(n, n_objects=k, seed=0, distinct=True)
    for i, objs in enumerate(objects):
        for j, (c, s) in enumerate(objs):
            scenes.color[i, j], scenes.shape[i, j] = world.COLORS.index(c), scenes.shapes.index(s)
        scenes.count[i] = len(objs)
        scenes.mask[i] = np.arange(k) < len(objs)
    return scenes


def test_pope_scores_on_known_replies():
    scores = pope_scores(["yes", "yes", "yes", "no"], ["yes", "no", "yes", "no"])
    assert scores == pytest.approx({"accuracy": 0.75, "precision": 2 / 3, "recall": 1.0, "f1": 0.8,
                                    "yes_ratio": 0.75})
    with pytest.raises(ValueError, match="one reply per probe"):
        pope_scores(["yes"], ["yes", "no"])


def test_pope_probes_by_strategy():
    scenes = scenes_of([("red", "circle"), ("blue", "square")])
    adversarial = pope_probes(scenes, "adversarial")
    assert adversarial[0] in [("is there a red circle ?", "yes"), ("is there a blue square ?", "yes")]
    assert adversarial[1][0] in ("is there a red square ?", "is there a blue circle ?"), "a binding error"
    popular = pope_probes(scenes, "popular", popular=[("red", "circle"), ("green", "star")])
    assert popular[1] == ("is there a green star ?", "no"), "the most frequent absent pair"
    ranked = [("red", "circle"), ("green", "star"), ("pink", "cross"), ("cyan", "ring"), ("blue", "star")]
    many = scenes_of(*[[("red", "circle"), ("blue", "square")]] * 60)
    asked = {q for q, a in pope_probes(many, "popular", popular=ranked) if a == "no"}
    assert asked == {"is there a green star ?", "is there a pink cross ?", "is there a cyan ring ?"}, \
        "drawn among the top 3 absent pairs"
    from mmlib.vlm import crossed_share

    assert crossed_share(scenes_of([("red", "circle"), ("blue", "square")], [("green", "star")])) == 0.5
    random_no = pope_probes(scenes, "random")[1][0]
    assert random_no not in ("is there a red circle ?", "is there a blue square ?")
    with pytest.raises(ValueError, match="unknown POPE strategy"):
        pope_probes(scenes, "hard")


def test_chair_counts_mentioned_objects_that_are_not_there():
    scenes = scenes_of([("red", "circle"), ("blue", "square")], [("green", "star")])
    descriptions = ["two shapes : a small red circle and a small blue circle", "a large green star"]
    assert chair(descriptions, scenes) == pytest.approx({"chair_i": 1 / 3, "chair_s": 0.5, "unreadable": 0.0})
    unreadable = chair(["gibberish words", "a large green star"], scenes)
    assert unreadable == pytest.approx({"chair_i": 0.5, "chair_s": 0.5, "unreadable": 0.5})
    repeated = ["a red circle , a red circle and a blue circle", "a green star"]  # each object once
    assert chair(repeated, scenes)["chair_i"] == pytest.approx(1 / 3)
    assert description_scores(repeated, scenes)["precision"] == pytest.approx(2 / 3), "the same counting"


def test_chair_by_position_counts_each_mention_where_it_is_named():
    """The k-th distinct object named: how often, and how often made up. A repeated mention
    counts once, at its first place; an unreadable description names nothing."""
    from mmlib.vlm import chair_by_position

    scenes = scenes_of([("red", "circle"), ("blue", "square")], [("green", "star")], [("red", "circle")])
    descriptions = ["a red circle , a red circle and a blue circle",  # 1st right, 2nd made up
                    "a large green star",  # 1st right
                    "gibberish words"]
    by_k = chair_by_position(descriptions, scenes)
    assert by_k == {1: {"named": 2, "made_up": 0.0}, 2: {"named": 1, "made_up": 1.0}}
    # only the descriptions that name two objects or more: the first one alone
    assert chair_by_position(descriptions, scenes, min_named=2) == {1: {"named": 1, "made_up": 0.0},
                                                                    2: {"named": 1, "made_up": 1.0}}
    with pytest.raises(ValueError, match="min_named is a number of objects >= 1"):
        chair_by_position(descriptions, scenes, min_named=0)
    with pytest.raises(ValueError, match="3 descriptions for 2 scenes"):
        chair_by_position(descriptions, scenes_of([("red", "circle")], [("green", "star")]))


def test_description_scores_need_colour_and_shape_together():
    scenes = scenes_of([("red", "circle"), ("blue", "square")], [("green", "star")])
    swapped = "the red square is left of the blue circle"  # a binding error: both objects wrong
    scores = description_scores([swapped, "a large green star"], scenes)
    assert scores == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    right = description_scores(["the blue square is above the red circle", "a green star"], scenes)
    assert right["f1"] == 1.0
    with pytest.raises(ValueError, match="one description per scene"):
        description_scores(["a green star"], scenes)


def test_description_data_are_the_scenes_in_plain_words(tok):
    data = description_data(30, held_out=world.default_held_out(), tokenizer=tok)
    references = descriptions_of(data.scenes)
    for i in range(len(data)):
        said = {(o["color"], o["shape"]) for o in world.parse_caption(references[i])}
        assert said == {(o["color"], o["shape"]) for o in data.scenes.objects(i)}
        start = int(data.labels["answer_start"][i])
        assert tok.decode(data.tokens[i, :start], skip_special=False) == f"<user> {DESCRIBE} <assistant>"
        assert tok.decode(data.tokens[i, start:]) == references[i]


def test_mix_keeps_each_exchange_with_its_image_and_scene(tok):
    questions = instruction_data(20, seed=0, tokenizer=tok)
    descriptions = description_data(10, seed=1, tokenizer=tok)
    both = mix(questions, descriptions, seed=0)
    assert len(both) == 30 and set(both.labels) == {"answer_start"}
    sources = [(d, k) for d in (questions, descriptions) for k in range(len(d))]
    for i in range(len(both)):
        same = [(d, k) for d, k in sources if d.texts[k] == both.texts[i]
                and torch.equal(d.images[k], both.images[i])]
        assert len(same) == 1, "every exchange comes from exactly one source example"
        d, k = same[0]
        assert d.scenes.objects(k) == both.scenes.objects(i)
        n = int(d.lengths[k])
        assert torch.equal(both.tokens[i, :n], d.tokens[k, :n]) and int(both.lengths[i]) == n
    with pytest.raises(ValueError, match="at least one"):
        mix()


def test_the_majority_baseline_always_gives_the_most_frequent_answer(tok):
    from mmlib.vlm import majority_baseline

    train = instruction_data(400, seed=5, tokenizer=tok)
    table = majority_baseline(train, train)
    sizes = train.labels["answer"][train.labels["qtype"] == world.QUESTION_TYPES.index("size")]
    assert table["size"] == pytest.approx(float((sizes == sizes.mode().values).float().mean()))
    assert 0.4 < table["exists"] < 0.6 and table["color"] < 0.3


def test_accuracy_by_type_is_exact_match(tok):
    data = instruction_data(40, seed=4, tokenizer=tok)
    truth = [tok.decode(data.tokens[i, int(data.labels["answer_start"][i]):]) for i in range(40)]
    assert accuracy_by_type(truth, data)["overall"] == 1.0
    wrong = ["purple"] * 40
    table = accuracy_by_type(wrong, data)
    assert table["count"] == 0.0 and table["overall"] < 0.3


# --- the shipped describer (chapter 7b's recipe) ------------------------------------------------

def test_the_shipped_describer_describes_renders_as_chapter_7b_measured():
    """The weights shipped with mmlib fit today's code and recipe, and the model names the
    objects of fresh test scenes (chapter 7b asserts object F1 >= 0.9 for its own run)."""
    from mmlib.vlm import DESCRIBE, pretrained_describer

    model = pretrained_describer(device="cpu")
    assert not model.training and not any(p.requires_grad for p in model.vision.parameters())
    test = description_data(120, split="test", held_out=world.default_held_out(), seed=3)
    said = model.answer(test.float_images(), [DESCRIBE] * len(test), max_new=24)
    assert description_scores(said, test.scenes)["f1"] >= 0.9, said[:4]
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.answer(test.float_images()[:2, :, :16, :16], [DESCRIBE] * 2)


def test_pretrained_describer_refuses_foreign_and_missing_weights(tmp_path):
    from dataclasses import replace

    from mmlib.recipes import DESCRIBER, VQA
    from mmlib.vlm import describer_record, pretrained_describer, pretrained_vision_language_model

    with pytest.raises(ValueError, match="no shipped model has this recipe"):
        pretrained_describer(replace(DESCRIBER, steps=1))
    with pytest.raises(ValueError, match="train_vlm.py describer"):
        pretrained_describer(path=tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="(?s)does not fit.*train_vlm.py vqa"):  # the describer's file
        pretrained_vision_language_model(VQA, path=shipped.path_of("describer"))
    assert describer_record()["recipe"]["steps"] == DESCRIBER.steps


def test_the_shipped_vqa_model_answers_as_chapter_7_measured():
    """Chapter 7 loads the model its whole recipe trains; it answers fresh test questions as the
    chapter asserts (>= 0.9 overall), its tower frozen."""
    from mmlib.recipes import VQA
    from mmlib.vlm import pretrained_vision_language_model, shipped_record, vqa_accuracy

    model = pretrained_vision_language_model(VQA, device="cpu")
    assert not model.training and not any(p.requires_grad for p in model.vision.parameters())
    test = instruction_data(300, split="test", seed=5)
    assert vqa_accuracy(model, test)["overall"] >= 0.9
    assert shipped_record(VQA)["recipe"]["steps"] == VQA.steps
    assert shipped_record(VQA, "lm")["recipe"]["lm"]["steps"] == VQA.lm.steps
    with pytest.raises(ValueError, match="'model' or 'lm'"):
        shipped_record(VQA, "tower")


def test_shipped_language_models_are_pretrained_and_shared_by_recipes_with_the_same_lm():
    """The LM before tuning loads for any recipe whose LM and seed are a shipped one's (chapter
    7c's connectors share chapter 7's), not for others; and it has read the world's chat text:
    its loss is far below an untrained LM's."""
    from dataclasses import replace

    from mmlib.recipes import CONNECTOR_RECIPES, DESCRIBER, LLAVA_RECIPES, VQA
    from mmlib.vlm import language_model, pretrained_language_model, text_data

    lm = pretrained_language_model(VQA, device="cpu")
    same = pretrained_language_model(CONNECTOR_RECIPES["linear"], device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(lm.parameters(), same.parameters()))
    for other in (LLAVA_RECIPES["average"], replace(VQA, seed=1)):
        with pytest.raises(ValueError, match="no shipped model"):
            pretrained_language_model(other)
    described = pretrained_language_model(DESCRIBER, device="cpu")
    batch = text_data(DESCRIBER).batch(torch.arange(256), "cpu")
    with torch.no_grad():
        trained, fresh = described.loss(batch)["loss"], language_model(DESCRIBER).loss(batch)["loss"]
    assert trained < 0.5 * fresh, (trained, fresh)


def test_train_describer_keeps_clips_tower_frozen_and_the_callers_randomness():
    from mmlib.pretrain import clip_model
    from mmlib.text import Tokenizer
    from dataclasses import replace

    from mmlib.recipes import DESCRIBER
    from mmlib.vlm import train_describer

    clip = clip_model(len(Tokenizer.for_world()))
    before = [p.clone() for p in clip.image_encoder.parameters()]
    lm = replace(DESCRIBER.lm, questions=64, descriptions=32, steps=2, batch_size=8)
    recipe = replace(DESCRIBER, questions=64, descriptions=32, steps=2, batch_size=8, lm=lm)
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    model = train_describer(recipe, clip=clip, progress=False)
    assert torch.equal(torch.rand(2), expected), "the caller's random numbers moved"
    assert not model.training
    for tower in (clip.image_encoder, model.vision):  # the caller's CLIP and the model's copy
        assert all(torch.equal(a, b) for a, b in zip(tower.parameters(), before))
    again = train_describer(recipe, clip=clip, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())), "deterministic"


def test_cross_attention_reads_cached_keys_and_values_while_generating():
    """Without gradients the block projects the image's keys and values once and reuses them: the
    same function as nn.MultiheadAttention, for a context of one image or of a batch."""
    from mmlib.vlm import GatedCrossAttention

    torch.manual_seed(0)
    block = GatedCrossAttention(32, heads=4)
    nn.init.constant_(block.attn_gate, 1.0)
    x = torch.randn(3, 5, 32)
    for context in (torch.randn(1, 10, 32), torch.randn(3, 10, 32)):
        block.context = context
        trained = block(x)  # with gradients: nn.MultiheadAttention
        with torch.no_grad():
            generated = block(x)
            first = block.keys_values()
            block(x[:, :1])
            assert block.keys_values() is first, "projected once per image"
        assert torch.allclose(trained, generated, atol=1e-5)
    block.context = torch.randn(1, 10, 32)
    with torch.no_grad():
        assert block.keys_values() is not first, "a new image, new keys and values"


def test_answer_cost_counts_parameters_and_arithmetic(tok):
    from mmlib.freezing import count_trainable
    from mmlib.vlm import answer_cost

    model = small_vlm(tok, "mlp")
    data = instruction_data(16, seed=2, tokenizer=tok)
    cost = answer_cost(model, data, n=8, max_new=3)
    assert cost["trainable"] == count_trainable(model) > 0
    assert cost["FLOPs per answer"] > 2 * cost["trainable"], "at least one multiply-add per weight and word"
    assert cost["prefill ms"] > 0 and cost["words/s after the first"] > 0
    with pytest.raises(ValueError, match="number of questions"):
        answer_cost(model, data, n=99)
    with pytest.raises(ValueError, match="max_new >= 2"):
        answer_cost(model, data, n=8, max_new=1)


def test_answer_can_run_past_the_end(tok, monkeypatch):
    model = small_vlm(tok, "mlp")
    data = instruction_data(4, seed=2, tokenizer=tok)
    images, calls = data.float_images(), []
    generate = model.lm.generate

    def spy(*args, **kwargs):
        new, logits = generate(*args, **kwargs)
        calls.append((kwargs["eos_id"], new.shape[1]))
        return new, logits
    monkeypatch.setattr(model.lm, "generate", spy)
    stopped = model.answer(images, data.texts, max_new=20)
    assert {eos for eos, _ in calls} == {tok.eos_id}, "replies stop at <eos>"
    calls.clear()
    assert model.answer(images, data.texts, max_new=20, stop=False) == stopped, "same replies"
    assert set(calls) == {(None, 20)}, "every batch ran to max_new"


def test_lora_recipes_set_the_scale_and_may_free_the_positions():
    import dataclasses

    from mmlib.pretrain import image_tower
    from mmlib.recipes import DESCRIBER_LORA
    from mmlib.vlm import language_model, vision_language_model

    lm = language_model(DESCRIBER_LORA)
    plain = vision_language_model(DESCRIBER_LORA, image_tower(), lm)
    assert not plain.lm.positions.requires_grad and plain.lm.blocks[0].attn.qkv.scale == 8.0 / 4
    freed = vision_language_model(dataclasses.replace(DESCRIBER_LORA, lora_positions=True, lora_alpha=16.0),
                                  image_tower(), lm)
    assert freed.lm.positions.requires_grad and freed.lm.blocks[0].attn.qkv.scale == 16.0 / 4
    assert not freed.lm.tokens.weight.requires_grad, "the rest of the LM stays frozen"
