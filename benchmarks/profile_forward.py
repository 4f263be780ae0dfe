"""Where a forward's time goes: torch.profiler's self CPU time per op, students next to DeiT-Tiny, one process.

The numba scan shows up as its autograd Function (``_NumbaTokenScan``); everything else under the name of the
aten op that ran. Read the shares, and the wall time per forward printed with them, against `lower_bound.py`.

    python benchmarks/profile_forward.py --resolution 224 --batch 8            # forward, 2 threads
    python benchmarks/profile_forward.py --batch 1 --backward --rows 20         # forward+backward
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from bench_students import Case, _build, _prime_kernels  # noqa: E402  (one model factory for every benchmark)


def step(model, inputs: dict, backward: bool) -> None:
    if backward:
        model(**inputs)[0].float().mean().backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.inference_mode():
            model(**inputs)


def profile_model(name: str, args: argparse.Namespace) -> str:
    case = Case(name, "-" if name.startswith("deit") else "numba", args.resolution, args.batch, args.backward)
    torch.manual_seed(0)
    model, inputs = _build(case)
    _prime_kernels(case)
    step(model, inputs, args.backward)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step(model, inputs, args.backward)
        times.append((time.perf_counter() - start) * 1000)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            step(model, inputs, args.backward)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"## {name}: {statistics.median(times):,.1f} ms per {'fwd+bwd' if args.backward else 'fwd'} (median)"]
    lines.append("| op | self CPU ms per pass | share | calls per pass |\n|---|---:|---:|---:|")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]:
        ms = event.self_cpu_time_total / 1000 / args.repeats
        share = event.self_cpu_time_total / total
        lines.append(f"| {event.key} | {ms:,.2f} | {share:.1%} | {event.count // args.repeats} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["deit-t", "pmamba-t", "vim-t"])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=14)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, batch {args.batch}, "
          f"{args.resolution} px, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    for name in args.models:
        print("\n" + profile_model(name, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
