"""Train the book's text-to-image generator (chapter 8) and ship its weights.

    python benchmarks/train_generator.py            # train by GeneratorRecipe(), report, save
    python benchmarks/train_generator.py --text clip   # conditioned on chapter 4's frozen text tower

The recipe (``mmlib.recipes.GeneratorRecipe``) takes about five minutes on two CPU cores: more
than a chapter's budget, so chapter 8 trains the same recipe briefly in front of the reader and
loads these weights (``pretrained_generator``) for its measurements. Training is deterministic on
one machine and PyTorch version; the weights land in ``mmlib/weights/generator.pt`` with the
recipe, the time it took and the versions used. Rerun this after changing ``TextToImage`` or
the recipe (``pretrained_generator`` refuses weights of another recipe or shape).
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

from mmlib import generate as G  # noqa: E402
from mmlib import shipped  # noqa: E402
from mmlib.notebook import choose_threads  # noqa: E402
from mmlib.recipes import GeneratorRecipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default="trainable", choices=G.TEXT_ENCODERS,
                        help="the prompt encoder: trained with the U-Net, or chapter 4's frozen CLIP tower")
    parser.add_argument("--out", type=Path, default=None, help="where to save the weights (default: shipped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(choose_threads())
    recipe = GeneratorRecipe(text=args.text)
    out = args.out or G.weights_path(recipe)
    text_encoder = None
    if args.text == "clip":
        from mmlib.pretrain import pretrained_clip

        text_encoder = pretrained_clip(progress=False).text_encoder
    began = time.perf_counter()
    model, history = G.train_generator(recipe, progress=False, text_encoder=text_encoder)
    seconds = time.perf_counter() - began
    print(f"trained {recipe.steps} steps in {seconds:.0f} s; final loss {history.loss[-1]:.4f}")
    shipped.save(model, out, asdict(recipe), seconds)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
