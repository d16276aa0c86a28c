"""Train chapter 7b's describer and ship its weights (chapter 8 reads generated images with it).

    python benchmarks/train_describer.py        # train by mmlib.recipes.DESCRIBER, report, save

Chapter 7b trains this model in front of the reader; chapter 8 needs the same model as a second
reader of its generated images and has no minute to spare, so the recipe
(``mmlib.recipes.DESCRIBER``, about a minute on two CPU cores after chapter 4's CLIP) runs
here once and its weights land in ``mmlib/weights/describer.pt`` with the recipe, the time it
took and the versions used. The frozen copy of CLIP's image tower ships inside it, so the
weights match on any machine. Rerun this after changing the model's code or the recipe
(``pretrained_describer`` refuses weights of another recipe or shape).
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
from mmlib.recipes import DESCRIBER  # noqa: E402
from mmlib.vlm import describe, description_scores, test_sets, train_describer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where to save the weights (default: shipped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(choose_threads())
    recipe = DESCRIBER
    out = args.out or shipped.path_of("describer")
    clip = pretrained_clip(progress=False)  # from the cache when chapter 4 ran before
    began = time.perf_counter()
    model = train_describer(recipe, clip=clip, progress=False)
    seconds = time.perf_counter() - began
    test = test_sets()["descriptions"]  # as chapter 7b
    print(f"trained in {seconds:.0f} s; object F1 on {len(test)} test scenes "
          f"{description_scores(describe(model, test), test.scenes)['f1']:.3f}")
    shipped.save(model, out, asdict(recipe), seconds)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
