"""The book's ranked claims: for each, the recipes its chapter runs and the measurement that reads
its numbers, so that the seed benchmark (``benchmarks/seeds.py``) reruns exactly the chapter's
run with other seeds; and what the chapters read back from that benchmark.

``CLAIMS[name]`` is a ``Claim``: the chapter, the recipes by the names the chapter gives them
(seed 0: ``tests/test_claims.py`` checks each equals what the chapter builds) and
``measure(recipes) -> {row: number}``. The benchmark stores mean, standard deviation and values
per row in ``mmlib/seed_spread.json``; ``seed_spread``, ``spread_table``, ``paired``, ``beats``
and ``comparison_table`` read it. The book states that A beats B only when the 95 % confidence
interval of the paired per-seed difference A - B, over at least five seeds, excludes 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Mapping

from mmlib import recipes as R
from mmlib.notebook import table


@dataclass(frozen=True)
class Claim:
    """A ranked comparison: its ``chapter`` (notebook name), its ``recipes`` at seed 0 by the
    variable names the chapter uses, and ``measure(recipes)`` -> {row: number}."""

    chapter: str
    recipes: Mapping[str, Any]
    measure: Callable[[dict], dict[str, float]]

    def run(self, seed: int) -> dict[str, float]:
        """The measurement with every recipe at ``seed`` (0: the chapter's own run)."""
        return self.measure({name: R.with_seed(value, seed) for name, value in self.recipes.items()})


def _clip():
    from mmlib.pretrain import pretrained_clip

    return pretrained_clip(progress=False)


def _fusion(r):
    from mmlib.models import compare_fusions, fusion_data, train_fusion_encoder

    data = fusion_data(r["recipe"])
    cnn, _ = train_fusion_encoder(r["recipe"], data, progress=False)
    rows, _ = compare_fusions(r["recipe"], cnn.feature_extraction["image"], data, progress=False)
    return {row["fusion"]: row["accuracy"] for row in rows}


def _transfer(r):
    from mmlib.train import evaluate
    from mmlib.transfer import compare_transfer, domain_test

    recipe, top = r["recipe"], max(r["recipe"].ks)
    tables, models = compare_transfer(recipe, _clip().image_encoder, progress=False)
    out = {f"{task} {strategy} k={k}": acc for task, rows in tables.items()
           for strategy, row in rows.items() for k, acc in row.items() if k in (1, top)}
    clean = domain_test(recipe)
    out.update({f"sketch->clean {s} k={top}": evaluate(m, clean, "shape") for s, m in models["sketch"].items()})
    return out


def _normalisation(r):
    from mmlib.transfer import compare_normalisation

    return compare_normalisation(r["recipe"], _clip().image_encoder)


def _lit(r):
    from mmlib.pretrain import compare_lit

    return {s: row["accuracy"] for s, row in compare_lit(r["lit_recipe"], _clip(), progress=False).items()}


def _siglip(r):
    from mmlib.pretrain import compare_batch_losses

    return compare_batch_losses(r["recipe"], progress=False)


def _vlm(r):
    from mmlib import vlm as V

    recipe, sets = r["recipe"], V.test_sets()
    data, test = V.tuning_data(recipe), sets["test"]
    lm, _ = V.pretrain_language_model(recipe, progress=False)
    model = V.vision_language_model(recipe, _clip().image_encoder, lm)
    out = {"blind": V.accuracy_by_type(model.answer(None, test.texts), test)["overall"]}
    V.tune(model, data, recipe, progress=False)
    out["with the image"] = V.vqa_accuracy(model, test)["overall"]
    out["held-out pairs"] = V.vqa_accuracy(model, sets["heldout"])["overall"]
    for strategy in ("random", "adversarial"):
        scores = V.ask_pope(model, test, strategy, V.popular_pairs(data))
        out[f"POPE {strategy}, accuracy"], out[f"POPE {strategy}, yes ratio"] = scores["accuracy"], scores["yes_ratio"]
    # paired, per seed: the same model on both kinds of negatives
    out["POPE random - adversarial, accuracy"] = out["POPE random, accuracy"] - out["POPE adversarial, accuracy"]
    out["POPE adversarial - random, yes ratio"] = out["POPE adversarial, yes ratio"] - out["POPE random, yes ratio"]
    return out


def _describe(r):
    from mmlib import vlm as V

    full, clip, described = r["recipe"], _clip(), V.test_sets()["descriptions"]
    lm, _ = V.pretrain_language_model(full, progress=False)
    data, out = V.tuning_data(full), {}
    for name, recipe in (("full", full), ("lora", r["lora_recipe"]), ("lora + positions", r["positions_recipe"])):
        model = V.vision_language_model(recipe, clip.image_encoder, lm)
        V.tune(model, data, recipe, progress=False)
        said = V.describe(model, described)
        out[f"object F1, {name}"] = V.description_scores(said, described.scenes)["f1"]
        if name != "full":  # the suspect: later positions, frozen
            for n, f1 in V.f1_by_count(said, described.scenes).items():
                out[f"object F1 on {n} object{'s' * (n > 1)}, {name}"] = f1
        for t in (R.TEMPERATURES[0], R.TEMPERATURES[-1]) if name == "full" else ():
            said = V.describe(model, described, temperature=t, generator=V.sampling_generator(model, full.seed))
            out[f"CHAIR_i, T = {t}"] = V.chair(said, described.scenes)["chair_i"]
    return out


def _connectors(r):
    from mmlib import vlm as V

    comparison = next(iter(r.values()))  # one dict of recipes that share the LM and the data
    test, data, described, out = V.test_sets()["test"], None, None, {}
    lm, _ = V.pretrain_language_model(next(iter(comparison.values())), progress=False)
    for label, recipe in comparison.items():
        model = V.vision_language_model(recipe, _clip().image_encoder, lm)
        data = data or model.with_regions(V.tuning_data(recipe))  # the frozen tower's features, once
        if recipe.alignment_steps:  # LLaVA's stage 1
            described = described or model.with_regions(V.alignment_data(recipe))
            V.align(model, described, recipe, progress=False)
        V.tune(model, data, recipe, progress=False)
        vqa = V.vqa_accuracy(model, test)
        out[f"{label}, overall"], out[f"{label}, binding"] = vqa["overall"], (vqa["color"] + vqa["shape"]) / 2
    return out


def _generation(r):
    from mmlib import generate as G
    from mmlib.readers import clip_reading, described_as_asked
    from mmlib.vlm import pretrained_describer

    recipe = r["recipe"]
    judge = (G.pretrained_judge() if r["judge_recipe"] == R.JudgeRecipe()  # seed 0: the shipped one
             else G.train_judge(r["judge_recipe"], progress=False)[0])
    model = G.pretrained_generator() if recipe == R.GeneratorRecipe() else G.train_generator(recipe, progress=False)[0]
    asked = {name: texts for name, (_, texts) in G.evaluation_prompts().items()}
    drawn = {name: G.generate_images(model, texts) for name, texts in asked.items()}
    out = {name: G.faithfulness(judge, drawn[name], texts)["faithful"] for name, texts in asked.items()}
    seen, images = asked["seen pairs"], drawn["seen pairs"]  # closing the loop: three readers of one set
    out["read as asked: judge"] = G.judged_as_asked(judge, images, seen).float().mean().item()
    out["read as asked: describer"] = described_as_asked(pretrained_describer(), images, seen)[0].float().mean().item()
    out["read as asked: CLIP"] = clip_reading(_clip(), images, seen)["named"].float().mean().item()
    out["seen - held-out"] = out["seen pairs"] - out["held-out pairs"]
    free = G.free_prompts()
    for w in (R.GUIDANCE_WEIGHTS[1], R.GUIDANCE_WEIGHTS[-1]):
        images = G.generate_images(model, free, guidance=w)
        out[f"faithfulness, w = {w:g}"] = G.faithfulness(judge, images, free)["faithful"]
        out[f"diversity, w = {w:g}"] = G.diversity(judge, images, free)
    return out


def _align(r):
    from dataclasses import replace

    from mmlib import vlm as V
    from mmlib.vlm import preference as P

    recipe, sets = r["recipe"], V.test_sets()
    described, asked = sets["descriptions"], sets["test"]
    model = P.describer_for(recipe, progress=False)
    pairs = P.preference_pairs(model, recipe)  # every method learns from the same scored samples
    out = {f"{k}, before": v for k, v in P.alignment_scores(model, described, asked, recipe.seed).items()}
    runs = {**{name: m for name, m in r["recipes"].items()},
            **{f"beta = {b:g}": replace(recipe, beta=b) for b in R.DPO_BETAS}}
    tuned = {}
    for name, method in runs.items():
        if method not in tuned:
            tuned[method] = P.tune_preferences(method, model, pairs, progress=False)[0]
        policy = tuned[method]
        out.update({f"{k}, {name}": v for k, v in P.alignment_scores(policy, described, asked, recipe.seed).items()})
        out[f"KL, {name}"] = P.kl_from_reference(policy, model, described, seed=recipe.seed)
        if name in r["recipes"]:  # on the training pairs: did the chosen answers become likelier?
            shift = P.log_prob_shift(policy, pairs)
            out[f"log-ratio of chosen, {name}"] = shift["chosen"]
            out[f"log-ratio of rejected, {name}"] = shift["rejected"]
    return out


def _decode(r):
    from mmlib import vlm as V
    from mmlib.vlm.decoding import contrastive_describe

    recipe, described = r["describer_recipe"], V.test_sets()["descriptions"]
    model, out = V.describer_of(recipe, progress=False), {}
    for name, options in R.DECODINGS.items():
        for t in (0.0, 1.0):
            said = contrastive_describe(model, described, temperature=t,
                                        generator=V.sampling_generator(model, recipe.seed), **options)
            out[f"f1, T = {t:g}, {name}"] = V.description_scores(said, described.scenes)["f1"]
            out[f"chair_i, T = {t:g}, {name}"] = V.chair(said, described.scenes)["chair_i"]
            if name == "plain" and t:  # LURE's position effect within three-object lists alone
                lists = V.chair_by_position(said, described.scenes, min_named=3)
                out.update({f"made up, object {k} of a list": lists[k]["made_up"] for k in (1, 2, 3)})
    return out


def _cooccur(r):
    from mmlib.vlm import causes as K

    recipes = r["cooccur_recipes"]  # by share: the same describer's recipe, more company
    probes, out = K.companion_probes(next(iter(recipes.values()))), {}
    for share, recipe in recipes.items():
        model = K.companion_describer(recipe, clip=_clip(), progress=False)
        out.update({f"{k}, share {share:g}": v for k, v in K.companion_scores(model, probes, recipe).items()})
    return out


def _negatives(r):
    from mmlib import vlm as V
    from mmlib.vlm import negatives as N
    from mmlib.vlm import preference as P

    sets, out = V.test_sets(), {}
    for name, recipe in r["negatives_recipes"].items():  # the same describer, its data rewritten
        model = N.negative_describer(recipe, clip=_clip(), progress=False)
        scores = P.alignment_scores(model, sets["descriptions"], sets["test"], recipe.seed)
        scores["pope_adv yes ratio"] = V.ask_pope(model, sets["test"], "adversarial")["yes_ratio"]
        out.update({f"{k}, {name}": v for k, v in scores.items()})
    return out


def _hacking(r):
    from mmlib import vlm as V
    from mmlib.vlm import preference as P
    from mmlib.vlm.overoptimisation import overoptimisation

    recipe, described = r["recipe"], V.test_sets()["descriptions"]
    model = P.describer_for(recipe, progress=False)
    policy = P.tune_preferences(recipe, model, progress=False)[0]  # its implicit reward is the proxy
    rows = overoptimisation(model, policy, described, R.BEST_OF, recipe.beta, recipe.seed)
    return {f"{k}, n = {n}": v for n, row in rows.items() for k, v in row.items() if k != "KL bound"}


CLAIMS = {
    "fusion": Claim("03_algorithms", {"recipe": R.FusionRecipe()}, _fusion),
    "siglip": Claim("04b_objectives", {"recipe": R.ObjectivesRecipe()}, _siglip),
    "transfer": Claim("05_transfer", {"recipe": R.TransferRecipe()}, _transfer),
    "normalisation": Claim("05_transfer", {"recipe": R.TransferRecipe()}, _normalisation),
    "lit": Claim("05_transfer", {"lit_recipe": R.LitRecipe()}, _lit),
    "vlm": Claim("07_vlm", {"recipe": R.VQA}, _vlm),
    "describe": Claim("07b_describe", {"recipe": R.DESCRIBER, "lora_recipe": R.DESCRIBER_LORA,
                                       "positions_recipe": R.DESCRIBER_LORA_POSITIONS}, _describe),
    "connectors": Claim("07c_connectors", {"recipes": R.CONNECTOR_RECIPES}, _connectors),
    "llava": Claim("07c_connectors", {"llava_recipes": R.LLAVA_RECIPES}, _connectors),
    "generation": Claim("08_generation", {"recipe": R.GeneratorRecipe(), "judge_recipe": R.JudgeRecipe()},
                        _generation),
    "cooccur": Claim("09_hallucination", {"cooccur_recipes": R.COOCCURRENCE}, _cooccur),
    "negatives": Claim("09_hallucination", {"negatives_recipes": R.NEGATIVES}, _negatives),
    "decode": Claim("09_hallucination", {"describer_recipe": R.DESCRIBER}, _decode),
    "align": Claim("09b_alignment", {"recipe": R.ALIGN, "recipes": R.ALIGN_METHODS}, _align),
    "hacking": Claim("09b_alignment", {"recipe": R.ALIGN}, _hacking),
}
"""Every comparison the book ranks, by name (the names ``benchmarks/seeds.py`` takes)."""


# ---------------------------------------------------------------------------------------------
# Reading the benchmark's table
# ---------------------------------------------------------------------------------------------

def seed_spread(claim: str) -> dict[str, dict]:
    """The seed benchmark's table for one claim (``benchmarks/seeds.py --write`` stores it in
    ``mmlib/seed_spread.json``): row -> {"mean", "std", "values"} over its seeds. Claims joined
    by '+' ('decode+align') read as one table, to pair rows across claims whose seed s trains
    the same models (chapter 9's claims all start from the describer of seed s)."""
    stored = json.loads(resources.files("mmlib").joinpath("seed_spread.json").read_text())
    for part in claim.split("+"):
        if part not in stored:
            raise KeyError(f"no seed spread for {part!r}: the benchmark measured {sorted(stored)}; "
                           f"run python benchmarks/seeds.py {part} --write")
    parts = claim.split("+")
    if len({tuple(stored[p]["seeds"]) for p in parts}) > 1:
        raise ValueError(f"{claim!r}: these claims ran different seeds, so their rows do not pair")
    rows = {}
    for part in parts:
        shared = set(rows) & set(stored[part]["rows"])
        if shared:
            raise ValueError(f"{claim!r}: rows {sorted(shared)} are in more than one of these claims")
        rows.update(stored[part]["rows"])
    return rows


def _rows(claim: str, names) -> dict[str, dict]:
    rows = seed_spread(claim)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise KeyError(f"the {claim!r} spread has no rows {unknown}; it has {list(rows)}")
    return rows


MIN_SEEDS = 5
"""The fewest seeds a ranking may rest on."""

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042}
"""Student's t, 97.5th percentile, by degrees of freedom (two-sided 95 %)."""


def _t975(df: int) -> float:
    return _T975.get(df) or _T975[max(k for k in _T975 if k <= df)] if df <= 30 else 1.96


def paired(claim: str, a: str, b: str) -> dict[str, float]:
    """Row ``a`` minus row ``b`` of a claim, seed by seed (the same seed trains both): the mean
    difference, its standard deviation, the number of seeds and the 95 % confidence interval of
    the mean (Student's t), as 'mean', 'std', 'seeds', 'low', 'high'."""
    rows = _rows(claim, (a, b))
    diffs = [x - y for x, y in zip(rows[a]["values"], rows[b]["values"])]
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired difference needs at least two seeds; {claim!r} has {n}")
    mean = sum(diffs) / n
    std = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = _t975(n - 1) * std / n ** 0.5
    return {"mean": mean, "std": std, "seeds": n, "low": mean - half, "high": mean + half}


def beats(claim: str, a: str, b: str) -> bool:
    """Does ``a`` beat ``b``? The book's one rule for stating a ranking: over at least
    ``MIN_SEEDS`` seeds of the benchmark, the 95 % confidence interval of the paired per-seed
    difference a - b lies above 0. Otherwise the two tie (or ``b`` wins)."""
    difference = paired(claim, a, b)
    if difference["seeds"] < MIN_SEEDS:
        raise ValueError(f"the {claim!r} spread has {difference['seeds']} seeds; a ranking needs {MIN_SEEDS}: "
                         f"run python benchmarks/seeds.py {claim} --write")
    return difference["low"] > 0


def verdict(claim: str, a: str, b: str, lower_is_better: bool = False) -> str:
    """'a beats b', 'b beats a' or 'tie', by ``beats``. For a measure where less is better (a
    hallucination rate), ``lower_is_better`` says whether a is 'lower' or 'higher' than b by the
    same rule, or 'tie'."""
    if lower_is_better:
        return "lower" if beats(claim, b, a) else "higher" if beats(claim, a, b) else "tie"
    return f"{a} beats {b}" if beats(claim, a, b) else f"{b} beats {a}" if beats(claim, b, a) else "tie"


def comparison_table(claim: str, pairs, this_run: Mapping[str, float] | None = None,
                     lower_is_better: bool = False):
    """The rankings a chapter states, as the benchmark measured them: for each (a, b) of
    ``pairs``, this run's difference (when ``this_run`` is given), the mean paired difference
    over seeds with its 95 % interval, and the verdict of the book's rule (``verdict``; with
    ``lower_is_better``, whether a is lower than b)."""
    body = {}
    for a, b in pairs:
        d = paired(claim, a, b)
        row = {} if this_run is None else {"this run": this_run[a] - this_run[b]}
        row.update({"mean difference": d["mean"], "95 % interval": f"{d['low']:+.3f} to {d['high']:+.3f}",
                    "seeds": d["seeds"], "verdict": verdict(claim, a, b, lower_is_better)})
        body[f"{a} − {b}"] = row
    return table(body)


def spread_table(claim: str, this_run: Mapping[str, float] | None = None, names=None):
    """A table of the benchmark's mean and standard deviation over seeds for the rows ``names``
    (default: those of ``this_run``, or all), beside this run's numbers when given."""
    names = list(names or (this_run if this_run is not None else seed_spread(claim)))
    rows = _rows(claim, names)
    seeds = len(rows[names[0]]["values"])
    body = {}
    for name in names:
        body[name] = {} if this_run is None else {"this run": this_run.get(name, float("nan"))}
        body[name].update({f"mean over {seeds} seeds": rows[name]["mean"], "std": rows[name]["std"]})
    return table(body)


__all__ = ["Claim", "CLAIMS", "seed_spread", "MIN_SEEDS", "paired", "beats", "verdict", "comparison_table",
           "spread_table"]
