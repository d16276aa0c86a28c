"""Throughput of data-parallel contrastive pretraining: 1 process vs 2 (gloo), same run otherwise.

Run: python benchmarks/ddp.py
"""
from mmlib.distributed import launch
from mmlib.recipes import DDP_THROUGHPUT as ARGS  # chapter 6's run


def main() -> None:
    rates = {n: launch(*ARGS, processes=n)["images_per_second"] for n in (1, 2)}
    print(f"data-parallel pretraining (chapter 6's run: {' '.join(ARGS)})")
    for n, rate in rates.items():
        print(f"  {n} process(es): {rate:8.0f} images/s")
    print(f"  ratio 2/1: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
