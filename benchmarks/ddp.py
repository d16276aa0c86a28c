"""Throughput of data-parallel contrastive pretraining: 1 process vs 2 (gloo), same run otherwise.

Run: python benchmarks/ddp.py
"""
from mmlib.distributed import launch

ARGS = ["--pairs", "8000", "--steps", "40", "--batch-size", "256"]


def main() -> None:
    rates = {n: launch(*ARGS, processes=n)["images_per_second"] for n in (1, 2)}
    print("data-parallel pretraining (ImageCNN(128), global batch 256, 40 steps)")
    for n, rate in rates.items():
        print(f"  {n} process(es): {rate:8.0f} images/s")
    print(f"  ratio 2/1: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
