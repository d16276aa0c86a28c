"""mmlib.vlm.preference (chapter 9): exact rewards of descriptions, sequence log-probabilities of
answers, preference pairs from a model's own samples, the three methods' losses against their
formulas, and the KL from the reference."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mmlib import world
from mmlib.alignment import dpo_loss
from mmlib.recipes import ALIGN, ALIGN_METHODS, DESCRIBER, DPO_BETAS, PreferenceRecipe
from mmlib.vlm import DESCRIBE, chat_sequences, chat_tokenizer, description_data, descriptions_of
from mmlib.vlm.model import REGIONS
from mmlib.vlm.preference import (PreferenceTuning, answer_log_probs, description_rewards, kl_from_reference,
                                  pair_answers, preference_pairs, tune_preferences)
from tests.test_vlm import small_vlm


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer()


@pytest.fixture(scope="module")
def scenes():
    return world.sample_scenes(3, n_objects=(2, 2), seed=4)


def test_rewards_score_each_description_exactly(scenes):
    """F1 and precision by hand: the reference description is perfect; one object of two right
    with one made up is F1 1/2, precision 1/2; nothing readable is F1 0 but precision 1."""
    truth = descriptions_of(scenes)
    a = scenes.objects(1)[0]
    wrong = next((c, s) for c in world.COLORS for s in scenes.shapes
                 if (c, s) not in {(o["color"], o["shape"]) for o in scenes.objects(1)})
    half = f"the {a['color']} {a['shape']} is left of the {wrong[0]} {wrong[1]}"
    said = [truth[0], half, "look here"]
    assert description_rewards(said, scenes, "f1").tolist() == [1.0, 0.5, 0.0]
    assert description_rewards(said, scenes, "precision").tolist() == [1.0, 0.5, 1.0]


def test_rewards_refuse_unknown_kinds_and_mismatched_lengths(scenes):
    with pytest.raises(ValueError, match="unknown reward 'recall'"):
        description_rewards(["a red circle"] * 3, scenes, "recall")
    with pytest.raises(ValueError, match="one description per scene"):
        description_rewards(["a red circle"], scenes)


def test_answer_log_probs_sum_the_answer_tokens_only(tok, scenes):
    """log pi(answer) by hand: the log-softmax of each answer token (and <eos>) given what comes
    before it; the instruction's tokens and the padding add nothing."""
    model = small_vlm(tok, "mlp").eval()
    tokens, starts = chat_sequences(tok, [DESCRIBE] * 2, ["a red circle", "two shapes : a red circle and a blue star"])
    images = world.render_images(scenes[:2])
    regions = model.regions(images)
    got = answer_log_probs(model, tokens, starts, regions)
    logits = model(images, tokens)
    for b in range(2):
        end = int((tokens[b] != tok.pad_id).sum())
        logp = logits[b].log_softmax(-1)
        expected = sum(logp[t - 1, tokens[b, t]] for t in range(int(starts[b]), end))
        torch.testing.assert_close(got[b], expected)
    with pytest.raises(ValueError, match="one start and one image per sequence"):
        answer_log_probs(model, tokens, starts[:1], regions)


@pytest.fixture(scope="module")
def pairs_and_model():
    """Pairs from the shipped describer's own samples (an untrained model rarely names an
    object, so its samples all score 0)."""
    from mmlib.vlm import pretrained_describer

    model = pretrained_describer(device="cpu")
    recipe = replace(ALIGN, scenes=32, samples=3, temperature=1.5, steps=2, batch_size=4)
    return preference_pairs(model, recipe), model, recipe


def test_preference_pairs_keep_the_best_and_the_worst_with_the_references_log_probs(pairs_and_model):
    pairs, model, _ = pairs_and_model
    labels = pairs.labels
    assert len(pairs) >= 8 and (labels["chosen_score"] > labels["rejected_score"]).all()
    assert labels["chosen_score"].tolist() == pytest.approx(description_rewards(pairs.texts, pairs.scenes).tolist())
    assert pair_answers(pairs, "chosen") == pairs.texts
    rejected = description_rewards(pair_answers(pairs, "rejected"), pairs.scenes)
    assert labels["rejected_score"].tolist() == pytest.approx(rejected.tolist())
    regions = model.regions(pairs.float_images())
    torch.testing.assert_close(labels[REGIONS], regions)
    torch.testing.assert_close(labels["reference_rejected"],
                               answer_log_probs(model, labels["rejected"], labels["rejected_start"], regions))


def test_each_method_s_loss_is_its_formula(pairs_and_model):
    """DPO is dpo_loss of the policy's and the reference's log-probabilities (log 2 while the
    policy is the reference); DPO + NLL adds the tuning loss of the chosen answers; best-of-n
    is that tuning loss alone."""
    pairs, model, _ = pairs_and_model
    batch = pairs.batch(torch.arange(min(4, len(pairs))))
    losses = {m: PreferenceTuning(model, m, beta=0.5).loss(batch)["loss"] for m in ("dpo", "dpo+nll", "best-of-n")}
    torch.testing.assert_close(losses["dpo"], torch.tensor(np.log(2), dtype=torch.float32))
    chosen = {"image": batch["image"], "tokens": batch["chosen"], "answer_start": batch["chosen_start"],
              REGIONS: batch[REGIONS]}
    nll = model.loss(chosen)["loss"]
    torch.testing.assert_close(losses["best-of-n"], nll)
    torch.testing.assert_close(losses["dpo+nll"], losses["dpo"] + nll)
    moved = {k: v + 0.3 * torch.arange(len(v)) for k, v in batch.items() if k.startswith("reference")}
    value = PreferenceTuning(model, "dpo", beta=0.5).loss({**batch, **moved})["loss"]
    pc = answer_log_probs(model, batch["chosen"], batch["chosen_start"], batch[REGIONS])
    pr = answer_log_probs(model, batch["rejected"], batch["rejected_start"], batch[REGIONS])
    torch.testing.assert_close(value, dpo_loss(pc, pr, moved["reference_chosen"], moved["reference_rejected"], 0.5))
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        PreferenceTuning(model, "ppo")


def test_tuning_moves_the_policy_away_from_a_reference_left_unchanged(pairs_and_model):
    """Two steps of DPO + NLL: the reference's weights stay as they were, the policy's change,
    and the KL between them (zero for the reference against itself) is no longer zero."""
    pairs, model, recipe = pairs_and_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    described = description_data(8, split="test", seed=9)
    assert kl_from_reference(model, model, described) == pytest.approx(0.0, abs=1e-5)
    policy, history, same = tune_preferences(replace(recipe, optim=replace(recipe.optim, lr=1e-2)), model, pairs,
                                             progress=False)
    assert same is pairs and len(history.loss) == recipe.steps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert abs(kl_from_reference(policy, model, described)) > 1e-4


def test_preference_recipes_check_their_fields():
    assert ALIGN.describer == DESCRIBER and replace(ALIGN, seed=3).describer == replace(DESCRIBER, seed=3)
    assert set(ALIGN_METHODS) == {"DPO", "DPO + NLL", "best-of-n"} and ALIGN in ALIGN_METHODS.values()
    assert ALIGN.beta in DPO_BETAS
    with pytest.raises(ValueError, match="unknown method"):
        PreferenceRecipe(method="rlhf")
    with pytest.raises(ValueError, match="unknown reward"):
        PreferenceRecipe(reward="length")
    with pytest.raises(ValueError, match="beta > 0"):
        PreferenceRecipe(beta=0)


# --- visual contrastive decoding ---------------------------------------------------------------

def test_contrastive_logits_follow_vcd_s_formula_and_cut_off():
    """(1 + a) real - a other where p(real) >= cutoff * max p(real), -inf elsewhere."""
    from mmlib.vlm.decoding import contrastive_logits

    real = torch.log(torch.tensor([[0.6, 0.3, 0.08, 0.02]]))
    other = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    got = contrastive_logits(real, other, alpha=1.0, cutoff=0.2)
    expected = 2 * real - other
    assert torch.isinf(got[0, 2:]).all() and got[0, 2:].lt(0).all()  # 0.08 < 0.2 * 0.6: cut off
    torch.testing.assert_close(got[0, :2], expected[0, :2])
    assert got[0].argmax() == 1  # the word the image adds wins over the habitual one


def test_contrastive_decoding_without_contrast_is_the_model_s_own_greedy_decoding(tok):
    """alpha = 0, greedy: the same descriptions as ``describe``; a contrast changes them; bad
    arguments are refused with what to do."""
    from mmlib.vlm import describe
    from mmlib.vlm.decoding import contrastive_describe, distort

    model = small_vlm(tok, "mlp", seed=2).eval()
    data = description_data(6, split="test", seed=3)
    assert contrastive_describe(model, data, alpha=0.0) == describe(model, data)
    assert contrastive_describe(model, data, alpha=3.0, cutoff=0.0, contrast="blind") != describe(model, data)
    images = data.float_images()
    torch.testing.assert_close(distort(images, 0.0), images)
    assert not torch.equal(distort(images, 0.5, seed=1), distort(images, 0.5, seed=2))
    with pytest.raises(ValueError, match="alpha >= 0"):
        contrastive_describe(model, data, alpha=-1.0)
    with pytest.raises(ValueError, match="unknown contrast 'text'"):
        contrastive_describe(model, data, alpha=1.0, contrast="text")
    with pytest.raises(ValueError, match="noise is the share"):
        distort(images, 2.0)


def test_log_prob_shift_is_zero_for_the_reference_and_follows_the_tuning(pairs_and_model):
    """The reference against itself moved nothing; best-of-n, which raises the chosen answers'
    likelihood by its loss, makes them likelier on average after a few steps."""
    from mmlib.vlm.preference import log_prob_shift

    pairs, model, recipe = pairs_and_model
    still = log_prob_shift(model, pairs)
    assert still["chosen"] == pytest.approx(0, abs=1e-5) and still["rejected"] == pytest.approx(0, abs=1e-5)
    tuned, _, _ = tune_preferences(replace(recipe, method="best-of-n", steps=8, optim=replace(recipe.optim, lr=1e-4)),
                                   model, pairs, progress=False)
    moved = log_prob_shift(tuned, pairs)
    assert moved["chosen"] > 0 and 0 <= moved["chosen fell"] < 0.5


# --- co-occurrence, made a knob ------------------------------------------------------------------

def test_with_companion_adds_the_companion_beside_the_anchor_in_the_share_asked():
    """Share 1: every scene that holds the anchor and another object, and where the companion
    fits, gets it (in place of another object); scenes without the anchor are untouched; share 0
    is the scenes as drawn; colours and shapes stay distinct within a scene."""
    scenes = world.sample_scenes(3000, (1, 3), seed=5, distinct=True)
    a, b = ("red", "circle"), ("green", "star")
    pairs = lambda s, i: {(o["color"], o["shape"]) for o in s.objects(i)}  # noqa: E731
    full = world.with_companion(scenes, a, b, 1.0)
    none = world.with_companion(scenes, a, b, 0.0)
    assert all(pairs(none, i) == pairs(scenes, i) for i in range(len(scenes)))
    with_a = [i for i in range(len(scenes)) if a in pairs(scenes, i) and scenes.count[i] > 1]
    assert len(with_a) > 50
    assert np.mean([b in pairs(full, i) for i in with_a]) > 0.9
    assert all(pairs(full, i) == pairs(scenes, i) for i in range(len(scenes)) if a not in pairs(scenes, i))
    for i in with_a:
        objects = full.objects(i)
        assert len({o["color"] for o in objects}) == len({o["shape"] for o in objects}) == len(objects)
        assert a in pairs(full, i)
    with pytest.raises(ValueError, match="two different objects"):
        world.with_companion(scenes, a, a, 0.5)
    with pytest.raises(ValueError, match="colour"):
        world.with_companion(scenes, ("mauve", "circle"), b, 0.5)


def test_companion_data_at_share_0_is_the_describer_s_own_tuning_data():
    from mmlib.recipes import COOCCURRENCE
    from mmlib.vlm import tuning_data
    from mmlib.vlm.causes import companion_data

    small = replace(COOCCURRENCE[0.0], base=replace(DESCRIBER, questions=300, descriptions=300))
    mine, theirs = companion_data(small), tuning_data(small.describer)
    assert torch.equal(mine.images, theirs.images) and torch.equal(mine.tokens, theirs.tokens)
    more = companion_data(replace(small, share=1.0))
    assert not torch.equal(more.images, theirs.images)


def test_companion_probes_hold_the_anchor_and_not_the_companion():
    from mmlib.recipes import COOCCURRENCE
    from mmlib.vlm.causes import companion_probes

    recipe = COOCCURRENCE[0.5]
    probes = companion_probes(recipe, n=20)
    for i in range(len(probes)):
        present = {(o["color"], o["shape"]) for o in probes.scenes.objects(i)}
        assert recipe.anchor in present and recipe.companion not in present and len(present) > 1
    held_out = replace(recipe, anchor=("blue", "circle"))  # never in a test scene
    with pytest.raises(ValueError, match="ask fewer"):
        companion_probes(held_out, n=5)


# --- the cure by data: negative instructions ------------------------------------------------

def test_negative_questions_ask_about_the_scene_and_answer_rightly():
    """Share 1: every question becomes 'is there a {colour} {shape} ?'; a yes names an object of
    the scene, a no a pair absent from it, a colour and a shape of the scene where it has two
    objects of different colour and shape (LRV's existent-object manipulation)."""
    from mmlib.vlm import instruction_data
    from mmlib.vlm.negatives import negative_questions

    asked = instruction_data(60, seed=3)
    same = negative_questions(asked, 0.0)
    assert torch.equal(same.tokens, asked.tokens) and same.texts == asked.texts
    every = negative_questions(asked, 1.0, seed=1)
    answers = [every.tokenizer.decode(row[start:].tolist()) for row, start in
               zip(every.tokens, every.labels["answer_start"])]
    assert {a for a in answers} == {"yes", "no"}
    for i, (question, answer) in enumerate(zip(every.texts, answers)):
        assert question.startswith("is there a ")
        pair = tuple(question.split()[3:5])
        objects = every.scenes.objects(i)
        present = {(o["color"], o["shape"]) for o in objects}
        assert (pair in present) == (answer == "yes"), (question, answer, present)
        if answer == "no" and len(objects) > 1:
            assert pair[0] in {c for c, _ in present} and pair[1] in {s for _, s in present}
    with pytest.raises(ValueError, match="probability in"):
        negative_questions(asked, 1.5)


def test_negative_data_at_share_0_is_the_describer_s_own_tuning_data():
    from mmlib.recipes import NEGATIVES, NegativesRecipe
    from mmlib.vlm import tuning_data
    from mmlib.vlm.negatives import negative_data

    small = replace(NEGATIVES["as tuned"], base=replace(DESCRIBER, questions=300, descriptions=300))
    mine, theirs = negative_data(small), tuning_data(small.describer)
    assert torch.equal(mine.images, theirs.images) and torch.equal(mine.tokens, theirs.tokens)
    cured = negative_data(replace(small, share=0.3))
    assert torch.equal(cured.images, theirs.images) and len(cured) == len(theirs)
    extra = sum(t.startswith("is there") for t in cured.texts) - sum(t.startswith("is there") for t in theirs.texts)
    assert 0.15 * 300 < extra < 0.35 * 300, "about 30 % of 300 questions rewritten, some were already"
    with pytest.raises(ValueError, match="probability in"):
        NegativesRecipe(share=-0.1)


# --- reward hacking: best-of-n against a learned reward ------------------------------------

def test_best_of_n_picks_the_highest_of_the_first_n_and_never_an_unscored_one():
    from mmlib.alignment import best_of_n, best_of_n_kl

    nan = float("nan")
    scores = torch.tensor([[1.0, nan, 0.0], [2.0, 0.0, 0.0], [0.0, 5.0, 3.0]])
    assert best_of_n(scores, 1).tolist() == [0, 0, 0]
    assert best_of_n(scores, 2).tolist() == [1, 1, 0], "NaN loses to any score; ties keep the first"
    assert best_of_n(scores, 3).tolist() == [1, 2, 2]
    for bad in (0, 4, 2.0):
        with pytest.raises(ValueError, match="number of samples from 1 to 3"):
            best_of_n(scores, bad)
    with pytest.raises(ValueError, match="samples, items"):
        best_of_n(scores[0], 1)
    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(2) == pytest.approx(np.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(np.log(16) - 15 / 16)
    with pytest.raises(ValueError, match=">= 1"):
        best_of_n_kl(0)


def test_description_log_probs_score_what_fits_and_mark_the_rest(pairs_and_model):
    from mmlib.vlm.preference import description_log_probs

    _, model, _ = pairs_and_model
    data = description_data(3, split="test", seed=4)
    said = descriptions_of(data.scenes)
    too_long = " ".join(["three shapes : a small red circle , a small blue square and a large green star"] * 3)
    got = description_log_probs(model, data, [said[0], too_long, said[2]])
    tokens, starts = chat_sequences(model.tokenizer, [DESCRIBE] * 3, said)
    expected = answer_log_probs(model.eval(), tokens, starts, model.regions(data.float_images()))
    torch.testing.assert_close(got[[0, 2]], expected[[0, 2]], rtol=1e-4, atol=1e-4)
    assert torch.isnan(got[1])
    with pytest.raises(ValueError, match="one description per scene"):
        description_log_probs(model, data, said[:2])


def test_best_of_n_by_a_reward_that_is_zero_everywhere_keeps_the_first_sample(pairs_and_model):
    """The policy is the reference: its implicit reward is 0 for every sample, so best-of-n by
    it is the first sample at every n, while best-of-n by the truth can only gain."""
    from mmlib.vlm.overoptimisation import overoptimisation, sampled_rewards

    _, model, _ = pairs_and_model
    data = description_data(24, split="test", seed=5)
    scored = sampled_rewards(model, model, data, 3, beta=0.1, seed=2)
    assert scored["proxy"].shape == scored["truth"].shape == (3, 24)
    assert scored["proxy"].nan_to_num().abs().max() < 1e-4
    rows = overoptimisation(model, model, data, (1, 2, 3), beta=0.1, seed=2)
    assert rows[1]["f1"] == rows[2]["f1"] == rows[3]["f1"] == rows[1]["oracle f1"]
    assert rows[3]["oracle f1"] >= rows[1]["oracle f1"]
    assert rows[1]["KL bound"] == 0.0 and rows[3]["KL bound"] > rows[2]["KL bound"]
    with pytest.raises(ValueError, match="samples >= 1"):
        overoptimisation(model, model, data, (0, 2), beta=0.1)


def test_a_describer_on_rewritten_data_is_the_shipped_one_where_nothing_is_rewritten(monkeypatch):
    """Share 0 at seed 0 loads the shipped describer (its data are the describer's own, exactly);
    any other share or seed tunes afresh on the rewritten data."""
    from mmlib.recipes import COOCCURRENCE, NEGATIVES
    from mmlib.vlm import tuning
    from mmlib.vlm.causes import companion_describer
    from mmlib.vlm.negatives import negative_describer

    shipped = tuning.pretrained_describer(device="cpu").state_dict()
    for model in (companion_describer(COOCCURRENCE[0.0], device="cpu"),
                  negative_describer(NEGATIVES["as tuned"], device="cpu")):
        assert all(torch.equal(shipped[k], v) for k, v in model.state_dict().items())
    asked = []
    monkeypatch.setattr(tuning, "tune_afresh", lambda recipe, data, **kw: asked.append((recipe, data)) or "tuned")
    rewrite = lambda recipe: f"data at share {recipe.share}"  # noqa: E731
    got = tuning.describer_on_rewritten_data(NEGATIVES["with negatives"], rewrite)
    assert got == "tuned" and asked == [(NEGATIVES["with negatives"].describer, "data at share 0.3")]
    other_seed = replace(NEGATIVES["as tuned"], seed=1)
    tuning.describer_on_rewritten_data(other_seed, rewrite)
    assert asked[-1] == (other_seed.describer, "data at share 0.0")
