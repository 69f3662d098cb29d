"""Benchmark: procedural landscape pairs generated per second on one core.

Run ``python benchmarks/bench_landscapes.py [--size 256] [--count 100]``. Not a test:
timings depend on the machine and its load, so it only prints numbers.
"""

from __future__ import annotations

import argparse
import os
import time

# One core, as a data-loader worker would use; set before numpy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from spadegan.data.landscapes import generate_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image height/width in pixels")
    ap.add_argument("--count", type=int, default=100, help="scenes to time")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    args = ap.parse_args()

    generate_scene(0, args.size)  # warm caches (spline taps) before timing
    best_wall = best_cpu = float("inf")
    for r in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for s in range(args.count):
            generate_scene(1000 * r + s, args.size)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    n = args.count
    # Wall time suffers when other processes share the cores; CPU time is what one
    # dedicated core (e.g. a data-loader worker) would need.
    print(f"size {args.size}: {n / best_wall:.1f} pairs/s wall ({1000 * best_wall / n:.1f} ms/pair), "
          f"{n / best_cpu:.1f} pairs/s per CPU-second ({1000 * best_cpu / n:.1f} ms CPU/pair), "
          f"best of {args.repeats} runs of {n}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
