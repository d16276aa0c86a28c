"""Benchmark: execute every chapter in a fresh kernel; report wall time and peak memory.

    python benchmarks/run.py                 # every notebook under book/
    python benchmarks/run.py book/01_history.ipynb

Each notebook runs in its own process (a fresh Jupyter kernel, as a reader would run it). Peak
memory is the kernel's maximum resident set size. The scripts named in ``EXTRA_BENCHMARKS`` then
print rows of their own (e.g. ``benchmarks/world.py``: data generation throughput and memory).
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

EXTRA_BENCHMARKS: list[str] = ["world.py", "train.py", "ddp.py", "generate.py", "contention.py"]  # scripts beside this one that print rows of their own


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
    return {"notebook": str(path.relative_to(ROOT)), "wall_s": wall, "peak_mb": peak_kb / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: book/*.ipynb)")
    parser.add_argument("--write", action="store_true",
                        help="store the times in mmlib/chapter_times.json (each chapter's first line shows its own)")
    parser.add_argument("--no-extra", action="store_true", help="the chapters only, not EXTRA_BENCHMARKS")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every notebook even when one fails (report the failures at the end)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one.resolve())))
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
        print(f"[{number}/{len(notebooks)}] {path.name} ...", end=" ", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"FAILED: {path.name}", file=sys.stderr)
            if not args.keep_going:
                return 1
            failed.append(path.name)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['wall_s']:.0f} s, peak {rows[-1]['peak_mb']:.0f} MB", flush=True)
    cache.cleanup()
    width = max(len(r["notebook"]) for r in rows)
    print(f"{'notebook':<{width}}  {'wall s':>8}  {'peak MB':>8}")
    for r in rows:
        print(f"{r['notebook']:<{width}}  {r['wall_s']:>8.1f}  {r['peak_mb']:>8.0f}")
    print(f"{'total':<{width}}  {sum(r['wall_s'] for r in rows):>8.1f}  {max(r['peak_mb'] for r in rows):>8.0f} (max)")
    if args.write:
        path = ROOT / "mmlib" / "chapter_times.json"
        stored = json.loads(path.read_text()) if path.exists() else {"chapters": {}}
        stored.update(measured=time.strftime("%Y-%m-%d"), cpus=os.cpu_count(),
                      note="wall time of a fresh-kernel run, machine otherwise idle (benchmarks/run.py)")
        for r in rows:
            stored["chapters"][Path(r["notebook"]).stem] = {"wall_s": round(r["wall_s"], 1),
                                                             "peak_mb": round(r["peak_mb"])}
        path.write_text(json.dumps(stored, indent=1) + "\n")
    if failed:
        print(f"FAILED ({len(failed)}): {', '.join(failed)}")
        return 1
    for script in [] if args.no_extra else EXTRA_BENCHMARKS:
        print()
        subprocess.run([sys.executable, str(Path(__file__).parent / script)], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
