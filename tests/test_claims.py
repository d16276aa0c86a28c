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


# --- the rankings each chapter states, over the benchmark's seeds ---------------------------------
# (The chapters assert what their own run measured; these read only the stored benchmark, by the
# book's one rule: a ranking needs the 95 % interval of the paired difference over >= 5 seeds to
# exclude 0; every other pair the prose names is a tie.)

def pooled(*fusions):
    return [(a, b) for a in fusions for b in ("concat", "gmu", "tensor", "lowrank") if a != b]


STATED = {
    "fusion": {"beats": pooled("film", "xattn") + [("lowrank", "concat"), ("lowrank", "gmu"),
                                                   ("lowrank", "tensor"), ("tensor", "gmu")],
               "ties": [("film", "xattn"), ("tensor", "concat"), ("concat", "gmu")]},
    "siglip": {"beats": [("sigmoid - softmax, batch 16", "sigmoid - softmax, batch 128")],
               "ties": [("siglip, batch 16", "clip, batch 16")]},
    "transfer": {"beats": [("sound linear_probe k=1", "sound scratch k=1"),
                           ("sound linear_probe k=1", "sound fine_tune k=1"),
                           *[(f"{d} lp_ft k=64", f"{d} {b} k=64") for d in ("sketch", "sound")
                             for b in ("linear_probe", "fine_tune")],
                           *[(f"{d} scratch k=64", f"{d} fine_tune k=64") for d in ("sketch", "sound")],
                           ("sketch->clean lp_ft k=64", "sketch->clean fine_tune k=64"),
                           ("sketch->clean linear_probe k=64", "sketch->clean lp_ft k=64")],
                 "ties": [("sketch linear_probe k=64", "sketch fine_tune k=64")]},
    "normalisation": {"beats": [("fine_tune, batch stats", "fine_tune, pretrained stats"),
                                ("lp_ft, pretrained stats", "fine_tune, batch stats")], "ties": []},
    "lit": {"beats": [("unlocked", "locked"), ("locked", "scratch")], "ties": []},
    "vlm": {"beats": [("with the image", "blind"), ("with the image", "held-out pairs"),
                      ("POPE random, accuracy", "POPE adversarial, accuracy")], "ties": []},
    "describe": {"beats": [("object F1, full", "object F1, lora"), ("CHAIR_i, T = 1.5", "CHAIR_i, T = 0.0")],
                 "ties": [(f"object F1{p}, lora + positions", f"object F1{p}, lora")
                          for p in ("", " on 1 object", " on 2 objects", " on 3 objects")]},
    "connectors": {"beats": [(f"{a}, overall", f"{b}, overall") for a, b in (
                       ("instruction", "resampler"), ("linear", "resampler"), ("mlp", "resampler"),
                       ("instruction", "linear"), ("instruction", "mlp"), ("cross_attention", "resampler"))],
                   "ties": [(f"{a}, overall", f"{b}, overall") for a, b in (
                       ("linear", "mlp"), ("instruction", "cross_attention"), ("cross_attention", "linear"))]},
    "llava": {"beats": [(f"average, {k}", f"two stages, {k}") for k in ("overall", "binding")]
                       + [(f"pixel shuffle, {k}", f"two stages, {k}") for k in ("overall", "binding")],
              "ties": [(f"average, {k}", f"pixel shuffle, {k}") for k in ("overall", "binding")]},
    "generation": {"beats": [("faithfulness, w = 5", "faithfulness, w = 1"), ("diversity, w = 1", "diversity, w = 5"),
                             ("seen pairs", "two objects"), ("seen pairs", "held-out pairs"),
                             ("read as asked: judge", "read as asked: describer"),
                             ("read as asked: judge", "read as asked: CLIP")],
                   "ties": [("read as asked: describer", "read as asked: CLIP")]},
}


@pytest.mark.parametrize("claim", sorted(STATED))
def test_the_rankings_the_chapters_state(claim):
    for a, b in STATED[claim]["beats"]:
        assert beats(claim, a, b), f"{claim}: {a} beats {b}"
    for a, b in STATED[claim]["ties"]:
        assert not beats(claim, a, b) and not beats(claim, b, a), f"{claim}: {a} ties {b}"


def test_a_ranking_needs_five_seeds_and_an_interval_above_zero(monkeypatch):
    rows = {"a": {"values": [0.90, 0.91, 0.92, 0.93, 0.94]}, "b": {"values": [0.80, 0.81, 0.82, 0.83, 0.84]},
            "c": {"values": [0.95, 0.80, 0.96, 0.81, 0.92]}, "d": {"values": [0.9, 0.8, 0.9]},
            "e": {"values": [0.8, 0.7, 0.8]}}
    monkeypatch.setattr(claims, "seed_spread", lambda claim: rows)
    d = claims.paired("x", "a", "b")
    assert d["mean"] == pytest.approx(0.10) and d["std"] == pytest.approx(0.0, abs=1e-12)
    assert beats("x", "a", "b") and not beats("x", "b", "a")
    d = claims.paired("x", "c", "b")  # differences 0.15, -0.01, 0.14, -0.02, 0.08: mean 0.068
    half = 2.776 * d["std"] / 5 ** 0.5
    assert d["low"] == pytest.approx(d["mean"] - half) and d["low"] < 0 < d["high"]
    assert not beats("x", "c", "b") and not beats("x", "b", "c"), "a tie: the interval spans 0"
    assert claims.verdict("x", "c", "b") == "tie" and claims.verdict("x", "b", "a") == "a beats b"
    with pytest.raises(ValueError, match="needs 5"):
        beats("x", "d", "e")



def test_claims_on_the_same_models_pair_across_claims():
    """'decode+align' is one table: chapter 9's claims start from the same describer of each
    seed, so the decoding claim's plain sampling and the alignment claim's 'before' agree seed by
    seed, and a row of one pairs with a row of the other. Unknown parts and shared rows refuse."""
    both = seed_spread("decode+align")
    assert set(both) == set(seed_spread("decode")) | set(seed_spread("align"))
    same = claims.paired("decode+align", "chair_i, T = 1, plain", "chair_i, T = 1, before")
    assert same["mean"] == 0 and same["std"] == 0
    across = claims.paired("decode+align", "chair_i, T = 1, VCD, blind", "chair_i, T = 1, DPO + NLL")
    a, b = seed_spread("decode")["chair_i, T = 1, VCD, blind"], seed_spread("align")["chair_i, T = 1, DPO + NLL"]
    assert across["mean"] == pytest.approx(sum(a["values"]) / 5 - sum(b["values"]) / 5)
    with pytest.raises(KeyError, match="no seed spread for 'decoding'"):
        seed_spread("decoding+align")
    with pytest.raises(ValueError, match="more than one of these claims"):
        seed_spread("align+align")
