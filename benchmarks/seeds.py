"""Seed spread: rerun every comparison that the book ranks, over several seeds.

    python benchmarks/seeds.py                  # every claim, seeds 0 to 4
    python benchmarks/seeds.py transfer --seeds 0 1 2 3 4 5 6 7
    python benchmarks/seeds.py --write          # also update mmlib/seed_spread.json

A chapter runs one seed within its time budget; this benchmark reruns the same recipes with other
seeds (``dataclasses.replace(recipe, seed=s)``: the seed draws the data sample, the
initialisation and the batches; the pretrained CLIP is the book's, fixed). Each claim is an entry
of ``mmlib.claims.CLAIMS``: the recipes its chapter builds (seed 0 is the chapter's own run,
``tests/test_claims.py`` checks it) and the measurement that reads its numbers. The table gives
mean +- standard deviation and the values per row; a chapter states that A beats B only where
the 95 % confidence interval of the paired per-seed difference excludes 0, over at least five
seeds (``mmlib.claims.beats``), otherwise it says they tie. With
``--write`` it is stored in ``mmlib/seed_spread.json``, which the chapters show beside their own
run (``mmlib.claims.spread_table``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmlib.claims import CLAIMS  # noqa: E402
from mmlib.notebook import choose_threads  # noqa: E402


def summarise(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Mean, standard deviation and the values of each row over the seeds' runs."""
    return {name: {"mean": round(statistics.mean(r[name] for r in runs), 4),
                   "std": round(statistics.stdev(r[name] for r in runs), 4) if len(runs) > 1 else 0.0,
                   "values": [round(r[name], 4) for r in runs]}
            for name in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", nargs="*", help=f"claims to rerun: some of {list(CLAIMS)} (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--write", action="store_true", help="update mmlib/seed_spread.json")
    args = parser.parse_args(argv)
    unknown = [c for c in args.claims if c not in CLAIMS]
    if unknown:
        parser.error(f"unknown claims {unknown}: choose from {list(CLAIMS)}")
    if len(args.seeds) < 2 or len(set(args.seeds)) < len(args.seeds) or min(args.seeds) < 0:
        parser.error("a spread needs at least two different seeds, each >= 0")
    torch.set_num_threads(choose_threads())
    path = ROOT / "mmlib" / "seed_spread.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    for name in args.claims or list(CLAIMS):
        start, runs = time.perf_counter(), []
        for seed in args.seeds:
            runs.append(CLAIMS[name].run(seed))
            print(f"  {name} seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
        table = summarise(runs)
        print(f"\n{name} (chapter {CLAIMS[name].chapter}): mean ± std over seeds {args.seeds}")
        for row, summary in table.items():
            values = " ".join(f"{v:.3f}" for v in summary["values"])
            print(f"  {row:<36} {summary['mean']:.3f} ± {summary['std']:.3f}   [{values}]")
        stored[name] = {"seeds": args.seeds, "measured": date.today().isoformat(), "torch": torch.__version__,
                        "seconds": round(time.perf_counter() - start), "rows": table}
        if args.write:
            path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
