"""mmlib.recipes: every recipe is a frozen value, checked when it is made, and the named recipes
of the chapters are what the chapters describe."""

import dataclasses

import pytest

from mmlib import recipes as R
from mmlib.train import Optimisation


def test_recipes_are_values_no_chapter_can_change():
    """Frozen all the way down: the nested settings (a connector's options, per-module learning
    rates) refuse changes too, and a recipe never shares them with the dict it was made from."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        R.VQA.steps = 1
    with pytest.raises(TypeError, match="cannot change"):
        R.VQA.optim.lr_scale["connector"] = 1.0
    with pytest.raises(TypeError, match="cannot change"):
        R.CONNECTOR_RECIPES["mlp"].connector_options.update(pool=1)
    options = {"pool": 2}
    recipe = R.VisionLanguageRecipe(connector="mlp", connector_options=options)
    options["pool"] = 1
    assert recipe.connector_options == {"pool": 2}, "the recipe keeps its own copy"
    assert len({R.VQA, R.DESCRIBER, R.VisionLanguageRecipe()}) == 2, "hashable, equal when equal"
    assert dataclasses.asdict(R.DESCRIBER)["optim"]["lr_scale"] == {"connector": 3.0}


@pytest.mark.parametrize("make", [lambda: R.FusionRecipe(seed=-1), lambda: R.ClipRecipe(seed=1.5),
                                  lambda: R.GeneratorRecipe(seed=True), lambda: R.JudgeRecipe(seed=-2)])
def test_a_seed_is_a_non_negative_integer(make):
    with pytest.raises(ValueError, match="non-negative integer"):
        make()


def test_bad_fields_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="unknown fusions \\['film2'\\]"):
        R.FusionRecipe(fusions=("film2",))
    assert R.FusionRecipe(fusions=("single",)).fusions == ("single",), "the joint encoder is allowed"
    with pytest.raises(ValueError, match="small_pairs"):
        R.ObjectivesRecipe(pairs=1000, small_pairs=2000)
    with pytest.raises(ValueError, match="lora_rank"):
        R.VisionLanguageRecipe(lora_rank=-1)


def test_the_chapter_7_family_differs_where_the_chapters_say():
    """7b's describer: LLaVA-1.5's MLP on the pooled grid, descriptions mixed in, its own LM
    pretraining; its LoRA run changes only the adapters and the learning rates; 7c's five
    recipes are chapter 7's at 600 steps with another connector."""
    changed = {f.name for f in dataclasses.fields(R.VQA)
               if getattr(R.VQA, f.name) != getattr(R.DESCRIBER, f.name)}
    assert changed == {"connector", "connector_options", "descriptions", "steps", "batch_size", "optim", "lm"}
    lora = {f.name for f in dataclasses.fields(R.DESCRIBER)
            if getattr(R.DESCRIBER, f.name) != getattr(R.DESCRIBER_LORA, f.name)}
    assert lora == {"lora_rank", "optim"} and R.DESCRIBER_LORA.lora_rank == 4
    for label, recipe in R.CONNECTOR_RECIPES.items():
        assert dataclasses.replace(recipe, connector=R.VQA.connector, connector_options=R.VQA.connector_options,
                                   steps=R.VQA.steps) == R.VQA, label
    assert list(R.CONNECTOR_RECIPES) == list(R.COMPARED)


def test_with_seed_reseeds_one_recipe_or_a_dict():
    assert R.with_seed(R.VQA, 4).seed == 4 and R.with_seed(R.VQA, 4).lm == R.VQA.lm
    assert {k: r.seed for k, r in R.with_seed(R.CONNECTOR_RECIPES, 2).items()} == dict.fromkeys(R.COMPARED, 2)


def test_an_optimisation_explains_bad_values():
    assert Optimisation(lr=1e-3, lr_scale={"connector": 3.0}).lr_scale == {"connector": 3.0}
    with pytest.raises(ValueError, match="learning rate must be positive"):
        Optimisation(lr=-1)
