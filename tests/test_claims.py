"""mmlib.claims: every ranked claim runs the recipes its chapter builds (seed 0 is the chapter's
run), the benchmark's table covers it, and the rankings the chapters state hold over its seeds."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import mmlib.claims as claims
from mmlib import recipes
from mmlib.claims import CLAIMS, beats, seed_spread, spread_table

BOOK = Path(__file__).resolve().parents[1] / "book"


def chapter_assignments(chapter: str | Path) -> dict[str, list]:
    """Every top-level ``name = expression`` of a chapter's code cells (a chapter's name, or a
    notebook's path), evaluated where it can be from the recipes module alone (what a recipe
    assignment needs): name -> values, in order."""
    path = chapter if isinstance(chapter, Path) else BOOK / f"{chapter}.ipynb"
    nb = json.loads(path.read_text())
    namespace = {**vars(recipes), "replace": dataclasses.replace}
    found: dict[str, list] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if source.lstrip().startswith(("!", "%")):
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    value = eval(compile(ast.Expression(node.value), chapter, "eval"), namespace)
                except Exception:
                    continue
                found.setdefault(node.targets[0].id, []).append(value)
    return found


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_the_benchmark_runs_the_recipes_the_chapter_builds(name):
    """Seed 0 of the benchmark is the chapter's own run: same recipe objects, field by field."""
    claim = CLAIMS[name]
    built = chapter_assignments(claim.chapter)
    for variable, recipe in claim.recipes.items():
        assert variable in built, f"{claim.chapter} builds no {variable!r} from mmlib.recipes"
        assert built[variable][0] == recipe, f"{claim.chapter}'s {variable} differs from the benchmark's"
        assert recipes.with_seed(recipe, 0) == recipe, "a claim's recipes are at seed 0"


def test_the_chapter_check_can_fail(tmp_path):
    """A chapter that changes one field of its recipe is caught: the check reads the notebook."""
    nb = json.loads((BOOK / "07_vlm.ipynb").read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "recipe = VQA" in source:
            cell["source"] = source.replace("recipe = VQA", "recipe = replace(VQA, steps=700)")
    altered = tmp_path / "07_vlm.ipynb"
    altered.write_text(json.dumps(nb))
    built = chapter_assignments(altered)["recipe"][0]
    assert built != CLAIMS["vlm"].recipes["recipe"] and built.steps == 700
    assert chapter_assignments("07_vlm")["recipe"][0] == CLAIMS["vlm"].recipes["recipe"]


def test_with_seed_changes_every_recipe_of_a_claim_and_nothing_else():
    other = {name: recipes.with_seed(value, 3) for name, value in CLAIMS["connectors"].recipes.items()}["recipes"]
    assert all(r.seed == 3 for r in other.values())
    assert all(dataclasses.replace(r, seed=0) == recipes.CONNECTOR_RECIPES[k] for k, r in other.items())
    with pytest.raises(ValueError, match="non-negative integer"):
        recipes.with_seed(recipes.VQA, -1)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_every_claim_has_its_seed_spread(name):
    rows = seed_spread(name)
    assert rows and all(len(r["values"]) >= 3 for r in rows.values())
    for row in rows.values():
        assert abs(row["mean"] - sum(row["values"]) / len(row["values"])) < 1e-3 and row["std"] >= 0


def test_seed_spread_explains_unknown_claims_and_rows():
    with pytest.raises(KeyError, match="benchmarks/seeds.py"):
        seed_spread("no such claim")
    with pytest.raises(KeyError, match="has no rows"):
        spread_table("lit", names=["nope"])
    with pytest.raises(KeyError, match="has no rows"):
        beats("lit", "locked", "nope")


def test_spread_table_puts_this_run_beside_the_seeds():
    frame = spread_table("lit", {"locked": 0.5}).data
    assert list(frame.index) == ["locked"] and frame.loc["locked", "this run"] == 0.5
    assert frame.loc["locked", "std"] == seed_spread("lit")["locked"]["std"]


def test_beats_needs_a_gap_wider_than_both_spreads(monkeypatch):
    rows = {"a": {"mean": 0.90, "std": 0.02}, "b": {"mean": 0.85, "std": 0.02}, "c": {"mean": 0.80, "std": 0.01}}
    monkeypatch.setattr(claims, "seed_spread", lambda claim: rows)
    assert beats("x", "a", "c")          # gap 0.10 > 0.03
    assert beats("x", "a", "b")          # gap 0.05 > 0.04
    rows["b"]["std"] = 0.04              # gap 0.05 < 0.06: a tie
    assert not beats("x", "a", "b") and not beats("x", "b", "a")
    assert not beats("x", "c", "a")      # a loss is not a win


# --- the rankings each chapter states, over the benchmark's seeds ---------------------------------
# (The chapters assert what their own run measured; these read only the stored benchmark.)

def ties(claim, a, b):
    return not beats(claim, a, b) and not beats(claim, b, a)


def test_chapter_3_fusions():
    pooled = ("concat", "gmu", "tensor", "lowrank")
    for a in ("film", "xattn"):
        for b in pooled:
            assert beats("fusion", a, b), f"{a} beats {b}"
    for b in pooled[:3]:
        assert beats("fusion", "lowrank", b)
    assert ties("fusion", "film", "xattn") and ties("fusion", "concat", "gmu")


def test_chapter_4b_sigmoid_vs_softmax():
    spread = seed_spread("siglip")
    at_16, at_128 = (spread[f"sigmoid - softmax, batch {b}"] for b in (16, 128))
    assert at_16["mean"] - at_128["mean"] > at_16["std"] + at_128["std"], "sigmoid gains more at batch 16"
    assert abs(at_16["mean"]) < at_16["std"], "and ties softmax there"


def test_chapter_5_transfer():
    for d in ("sketch", "sound"):
        assert beats("transfer", f"{d} lp_ft k=64", f"{d} linear_probe k=64")
        assert beats("transfer", f"{d} lp_ft k=64", f"{d} fine_tune k=64")
        assert beats("transfer", f"{d} scratch k=64", f"{d} fine_tune k=64")
    assert beats("transfer", "sound linear_probe k=1", "sound scratch k=1")


def test_chapter_7_pope():
    paired = seed_spread("vlm")["POPE random - adversarial, accuracy"]
    assert paired["mean"] > 2 * paired["std"] and min(paired["values"]) > 0, "adversarial is harder in every seed"


def test_chapter_7b_lora_and_temperature():
    spread = seed_spread("describe")
    full, lora = spread["object F1, full"], spread["object F1, lora"]
    assert full["mean"] - lora["mean"] > 2 * max(full["std"], lora["std"])
    hot, cold = spread["CHAIR_i, T = 1.5"], spread["CHAIR_i, T = 0.0"]
    assert hot["mean"] - cold["mean"] > 2 * max(hot["std"], cold["std"])


def test_chapter_7c_connectors():
    def ahead(a, b):
        return beats("connectors", f"{a}, overall", f"{b}, overall")

    assert ahead("instruction", "resampler"), "same tokens, asked"
    assert ahead("linear", "resampler") and ahead("mlp", "resampler")
    assert ahead("instruction", "linear") and ahead("instruction", "mlp")
    for a, b in (("linear", "mlp"), ("instruction", "cross_attention")):
        assert not ahead(a, b) and not ahead(b, a), f"{a} ties {b}"


def test_chapter_8_generation():
    for a, b in [("faithfulness, w = 5", "faithfulness, w = 1"), ("diversity, w = 1", "diversity, w = 5"),
                 ("seen pairs", "two objects"), ("read as asked: judge", "read as asked: describer"),
                 ("read as asked: judge", "read as asked: CLIP")]:
        assert beats("generation", a, b), f"{a} beats {b} over seeds"
    assert ties("generation", "seen pairs", "held-out pairs")
    assert ties("generation", "read as asked: describer", "read as asked: CLIP"), "the borrowed readers tie"
    assert min(seed_spread("generation")["seen - held-out"]["values"]) > 0
