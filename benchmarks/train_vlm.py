"""Train the vision-language models that ship with mmlib, and save their weights.

    python benchmarks/train_vlm.py vqa          # chapter 7's model (mmlib.recipes.VQA)
    python benchmarks/train_vlm.py describer    # chapter 7b's describer (mmlib.recipes.DESCRIBER)
    python benchmarks/train_vlm.py all          # both

Each recipe (``mmlib.vlm.SHIPPED``) trains as ``train_vision_language_model`` trains it: the
language model on text alone, then the model around a frozen copy of chapter 4's CLIP image
tower, tuned. Together that takes longer than a chapter's minute beside the rest of the
chapter's work, so it runs here once: ``mmlib/weights/<name>.pt`` holds the tuned model (its
copy of the image tower included, so the weights match on any machine) and
``<name>-lm.pt`` the language model before tuning (chapter 7b tunes it with LoRA, chapter 7c
joins it to five connectors). Each file keeps its recipe, the seconds its stage took and the
versions used. Rerun this after changing a model's code or its recipe (the loaders refuse
weights of another recipe or shape).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmlib import shipped  # noqa: E402
from mmlib.notebook import choose_threads  # noqa: E402
from mmlib.pretrain import pretrained_clip  # noqa: E402
from mmlib.vlm import (SHIPPED, describe, description_scores, pretrain_language_model, test_sets,  # noqa: E402
                       train_vision_language_model, vqa_accuracy)
from mmlib.vlm.tuning import _lm_recipe  # noqa: E402


def train_and_save(name: str, out: Path) -> None:
    recipe = SHIPPED[name]
    clip = pretrained_clip(progress=False)  # from the cache when chapter 4 ran before
    lm, history = pretrain_language_model(recipe, progress=False)
    lm_seconds = history.seconds
    began = time.perf_counter()
    model = train_vision_language_model(recipe, clip=clip, lm=lm, progress=False)  # tunes a copy of lm
    seconds = time.perf_counter() - began
    sets = test_sets()
    report = f"VQA accuracy {vqa_accuracy(model, sets['test'])['overall']:.3f}"
    if recipe.descriptions:
        described = sets["descriptions"]
        report += f", object F1 {description_scores(describe(model, described), described.scenes)['f1']:.3f}"
    print(f"{name}: language model {lm_seconds:.0f} s, tuning {seconds:.0f} s; {report}")
    for path, module, stored, took in ((out / f"{name}.pt", model, asdict(recipe), seconds),
                                       (out / f"{name}-lm.pt", lm, _lm_recipe(recipe), lm_seconds)):
        shipped.save(module, path, stored, took)
        print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=[*SHIPPED, "all"], help="which model to train")
    parser.add_argument("--out", type=Path, default=None, help="folder for the weights (default: shipped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(choose_threads())
    out = args.out or shipped.WEIGHTS
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED if args.name == "all" else [args.name]:
        train_and_save(name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
