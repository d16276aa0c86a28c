"""Train chapter 8's judge and ship its weights.

    python benchmarks/train_judge.py        # train by mmlib.recipes.JudgeRecipe(), report, save

The judge is a small CNN that reads generated images (``mmlib.generate.train_judge``, under
a minute on two CPU cores). Chapter 8 needs it before it can score anything, and its
minute goes to the generator, so the recipe runs here once and the weights land in
``mmlib/weights/judge.pt`` with the recipe, the time it took and the versions used. Rerun this
after changing the judge's code or its recipe (``pretrained_judge`` refuses weights of another
recipe or shape).
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
from mmlib.generate import judge_accuracy, judge_test_data, train_judge  # noqa: E402
from mmlib.notebook import choose_threads  # noqa: E402
from mmlib.recipes import JudgeRecipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where to save the weights (default: shipped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(choose_threads())
    recipe = JudgeRecipe()
    out = args.out or shipped.path_of("judge")
    began = time.perf_counter()
    judge, _ = train_judge(recipe, progress=False)
    seconds = time.perf_counter() - began
    scores = judge_accuracy(judge, judge_test_data(recipe))  # as chapter 8
    print(f"trained in {seconds:.0f} s; on fresh renders: "
          + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    shipped.save(judge, out, asdict(recipe), seconds)
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
