"""How fast a text-to-image model learns each attribute (design measurements for chapter 8).

    python benchmarks/generation_curve.py --steps 1500 --every 300 --target data

Trains the judge by chapter 8's recipe (``JudgeRecipe()``; its accuracy printed), then a
``TextToImage`` on the captioned 16-pixel scenes of ``GeneratorRecipe()`` with an EMA of its
weights, and every ``--every`` steps reads 48 guided samples of the EMA model ("a large <colour>
<shape>", every pair twice over half the pairs) with the judge: faithfulness and per-attribute
accuracy against training time. At the end, seen and held-out prompts with free size and
position, and two-object binding prompts. The options are design knobs away from the book's
recipe (its values are the defaults where the recipe has one). Not a test: a measurement to
design the chapter's budget from (issue 15's notes hold the numbers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mmlib import generate as G
from mmlib import world
from mmlib.notebook import choose_threads
from mmlib.recipes import GeneratorRecipe, JudgeRecipe
from mmlib.train import EMA, Optimisation, fit_steps, seed_everything


def single_prompts(pairs, n, seed=0):
    """``n`` one-object prompts cycling through ``pairs``, each naming a random size and a
    random position half of the time."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c, s = pairs[i % len(pairs)]
        size = str(rng.choice(world.SIZES)) if rng.random() < 0.5 else None
        where = str(rng.choice(world.POSITIONS)) if rng.random() < 0.5 else None
        obj = {"color": c, "shape": s, "size": size, "position": where}
        out.append(G.prompt_for([obj], size=size is not None, position=where is not None))
    return out


def main(argv=None) -> None:
    book = GeneratorRecipe()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--every", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=book.batch_size)
    parser.add_argument("--lr", type=float, default=book.lr)
    parser.add_argument("--channels", default=",".join(map(str, book.channels)))
    parser.add_argument("--objective", default="flow", choices=G.OBJECTIVES)
    parser.add_argument("--target", default=book.target)
    parser.add_argument("--guidance", type=float, default=G.GUIDANCE)
    parser.add_argument("--two-objects", type=float, default=book.two_objects)
    parser.add_argument("--judge-cache", default=None, help="load the judge from here if it exists, else save it")
    args = parser.parse_args(argv)
    torch.set_num_threads(choose_threads())
    seed_everything(0)
    began = time.perf_counter()
    if args.judge_cache and Path(args.judge_cache).exists():
        judge = G.Judge(JudgeRecipe().width)
        judge.load_state_dict(torch.load(args.judge_cache))
    else:
        judge, _ = G.train_judge(JudgeRecipe(), progress=False)
        if args.judge_cache:
            torch.save(judge.state_dict(), args.judge_cache)
    judge.eval()
    scores = G.judge_accuracy(judge, G.judge_test_data(JudgeRecipe()))
    print(f"judge: {time.perf_counter() - began:.0f} s, " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    data = G.generator_data(GeneratorRecipe(two_objects=args.two_objects))
    model = G.TextToImage(data.tokenizer, objective=args.objective, target=args.target,
                          channels=tuple(int(c) for c in args.channels.split(",")))
    ema = EMA(model, book.ema)
    probe = [f"a large {c} {s}" for c, s in world.PAIRS][::2] * 2
    began = time.perf_counter()

    def evaluate(_):
        r = G.faithfulness(judge, G.generate_images(ema.model, probe, guidance=args.guidance), probe)
        print(f"  {time.perf_counter() - began:6.1f} s  " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        return r["faithful"]

    history = fit_steps(model, data, steps=args.steps, batch_size=args.batch_size, optim=Optimisation(lr=args.lr),
                        hooks=[ema], evaluate=evaluate if args.every else None, eval_every=args.every, progress=False)
    print(f"training: {history.seconds:.0f} s for {args.steps} steps ({history.seconds / args.steps * 1000:.0f} ms/step)")
    held = sorted(world.default_held_out())
    seen = [p for p in world.PAIRS if p not in held]
    two = [f"a {c1} {s1} and a {c2} {s2}" for (c1, s1), (c2, s2) in zip(seen[::3], seen[1::3][::-1])] * 4
    for w in (1.0, args.guidance):
        row = []
        for name, texts in (("seen", single_prompts(seen, 160)), ("held-out", single_prompts(held, 160, 1)),
                            ("binding", two)):
            r = G.faithfulness(judge, G.generate_images(ema.model, texts, guidance=w), texts)
            row.append(f"{name} {r['faithful']:.3f}" + (f" (shape {r['shape']:.3f})" if "shape" in r else ""))
        print(f"w = {w}: " + ", ".join(row))


if __name__ == "__main__":
    main()
