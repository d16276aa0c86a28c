"""Benchmark: execute every chapter in a fresh kernel; report wall time and peak memory.

    python benchmarks/run.py                 # every notebook under book/
    python benchmarks/run.py book/01_history.ipynb

    python benchmarks/run.py --speed         # only the speed line: how fast is this machine?

Each notebook runs in its own process (a fresh Jupyter kernel, as a reader would run it). Peak
memory is the kernel's maximum resident set size. For every chapter over ``PROFILE_OVER``
seconds, the three slowest cells are listed (from the timings nbclient records). The scripts
named in ``EXTRA_BENCHMARKS`` then print rows of their own (e.g. ``benchmarks/world.py``: data
generation throughput and memory).

The speed line: before the chapters, the benchmark times a fixed reference workload (a few
training steps of a small CNN and a Transformer layer, the book's kind of work, on the threads
``mmlib.setup`` would choose) and reports each chapter's time also in units of that workload.
Times from two machines compare in units; a reader's own unit, times a chapter's units,
predicts the chapter's time on their machine. A shared machine's speed drifts by 10-20 % within
minutes, so the workload is timed again just before each chapter, and the chapter's units are
its seconds over that local unit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROFILE_OVER = 45.0  # seconds: chapters slower than this get their three slowest cells listed

EXTRA_BENCHMARKS: list[str] = ["world.py", "train.py", "ddp.py", "generate.py", "contention.py"]  # scripts beside this one that print rows of their own


def reference_workload(steps: int = 20, repeats: int = 3) -> float:
    """Seconds for ``steps`` training steps of a fixed mix (a small CNN on 128 images of 32 x 32
    pixels and one Transformer layer of width 128 on 64 sequences of 48 tokens), the fastest of
    ``repeats`` runs after a warm-up, on the threads ``mmlib.setup`` would choose."""
    import torch
    from torch import nn

    from mmlib.notebook import choose_threads

    torch.set_num_threads(choose_threads())
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 10))
    layer = nn.TransformerEncoderLayer(128, 4, 512, batch_first=True)
    optimiser = torch.optim.AdamW([*cnn.parameters(), *layer.parameters()], lr=1e-3)
    images, tokens = torch.randn(128, 3, 32, 32), torch.randn(64, 48, 128)

    def step():
        loss = cnn(images).square().mean() + layer(tokens).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - start)
    return best


def slowest_cells(nb, n: int = 3) -> list[dict]:
    """The ``n`` code cells of an executed notebook that took longest (nbclient's timings)."""
    from datetime import datetime

    timed = []
    for number, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            begun, ended = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                            for k in ("iopub.execute_input", "shell.execute_reply"))
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            timed.append({"cell": number, "seconds": round((ended - begun).total_seconds(), 1),
                          "first line": first[:60]})
    return sorted(timed, key=lambda c: -c["seconds"])[:n]


def run_one(path: Path) -> dict:
    """Execute one notebook in a fresh kernel (called in a child process)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - start
    # The kernel was this process's child; once it has exited, RUSAGE_CHILDREN holds its peak RSS.
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"notebook": str(path.relative_to(ROOT)), "wall_s": wall, "peak_mb": peak_kb / 1024,
            "slowest": slowest_cells(nb)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: book/*.ipynb)")
    parser.add_argument("--write", action="store_true",
                        help="store the times in mmlib/chapter_times.json (each chapter's first line shows its own)")
    parser.add_argument("--no-extra", action="store_true", help="the chapters only, not EXTRA_BENCHMARKS")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every notebook even when one fails (report the failures at the end)")
    parser.add_argument("--speed", action="store_true", help="only time the reference workload (the speed line)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one.resolve())))
        return 0
    sys.path.insert(0, str(ROOT))
    unit = reference_workload()
    print(f"speed line: the reference workload takes {unit:.2f} s on this machine (1 unit)", flush=True)
    if args.speed:
        return 0
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "book").glob("*.ipynb"))
    missing = [str(p) for p in notebooks if not p.exists()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    rows, failed = [], []
    # A fresh weights cache, shared by the chapters of this run (chapter 5 trains the book's CLIP,
    # later chapters load it), so the times are those of a first run in the book's order.
    cache = tempfile.TemporaryDirectory()
    env = {**os.environ, "MMLIB_CACHE": cache.name}
    for number, path in enumerate(notebooks, 1):
        local = reference_workload(repeats=2)  # the machine's speed now (it drifts)
        print(f"[{number}/{len(notebooks)}] {path.name} (unit {local:.2f} s) ...", end=" ", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"FAILED: {path.name}", file=sys.stderr)
            if not args.keep_going:
                return 1
            failed.append(path.name)
            continue
        rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "unit_s": local})
        print(f"{rows[-1]['wall_s']:.0f} s ({rows[-1]['wall_s'] / local:.1f} units), "
              f"peak {rows[-1]['peak_mb']:.0f} MB", flush=True)
        if rows[-1]["wall_s"] > PROFILE_OVER:
            for cell in rows[-1]["slowest"]:
                print(f"      cell {cell['cell']:>2}: {cell['seconds']:>5.1f} s  {cell['first line']}", flush=True)
    cache.cleanup()
    width = max(len(r["notebook"]) for r in rows)
    print(f"{'notebook':<{width}}  {'wall s':>8}  {'unit s':>6}  {'units':>6}  {'peak MB':>8}")
    for r in rows:
        print(f"{r['notebook']:<{width}}  {r['wall_s']:>8.1f}  {r['unit_s']:>6.2f}  {r['wall_s'] / r['unit_s']:>6.1f}  "
              f"{r['peak_mb']:>8.0f}")
    total, units = sum(r["wall_s"] for r in rows), sum(r["wall_s"] / r["unit_s"] for r in rows)
    unit = sorted(r["unit_s"] for r in rows)[len(rows) // 2]  # the machine's typical unit in this run
    print(f"{'total':<{width}}  {total:>8.1f}  {unit:>6.2f}  {units:>6.1f}  {max(r['peak_mb'] for r in rows):>8.0f} (max)")
    print(f"(1 unit = the reference workload's time, measured before each chapter; median {unit:.2f} s)")
    if args.write:
        path = ROOT / "mmlib" / "chapter_times.json"
        stored = json.loads(path.read_text()) if path.exists() else {"chapters": {}}
        stored.update(measured=time.strftime("%Y-%m-%d"), cpus=os.cpu_count(), unit_s=round(unit, 3),
                      note="wall time of a fresh-kernel run, machine otherwise idle (benchmarks/run.py); "
                           "units: wall time over the reference workload's time measured just before "
                           "the chapter; unit_s: its median over the run")
        for r in rows:
            stored["chapters"][Path(r["notebook"]).stem] = {"wall_s": round(r["wall_s"], 1),
                                                             "units": round(r["wall_s"] / r["unit_s"], 1),
                                                             "peak_mb": round(r["peak_mb"])}
        path.write_text(json.dumps(stored, indent=2) + "\n")
    if failed:
        print(f"FAILED ({len(failed)}): {', '.join(failed)}")
        return 1
    for script in [] if args.no_extra else EXTRA_BENCHMARKS:
        print()
        subprocess.run([sys.executable, str(Path(__file__).parent / script)], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
