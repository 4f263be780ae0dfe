"""The selective scan alone, side by side: fused numba kernel vs the PyTorch loop vs the chunked scan.

Shapes are the students' real scan calls at batch 8 and N=16: pmamba-t stacks 4 directions x d_inner 384 with
4 B/C groups, vim-t 2 x 384 with 2 groups; L=197/785/3137 are 224/448/896 px with 16 px patches (+ class token).
Everything runs in one process at a fixed torch thread count (numba follows it); times are medians, and the
ratios to numba are the numbers to read on a shared, noisy machine. The PyTorch backends materialise
(batch, L, channels, N) tensors: cases above ``--max-gb`` of estimated memory are reported as skipped.

    python benchmarks/bench_scan.py                      # the full table plus a pmamba-t forward at 224 px
    python benchmarks/bench_scan.py --lengths 197 --no-model
    python benchmarks/bench_scan.py --lengths 3137 --backends numba --no-model
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transmamba.modeling_transmamba import TransMambaConfig, TransMambaForImageClassification
from transmamba.modeling_transmamba.selective_scan import selective_scan_chunked, selective_scan_sequential
from transmamba.modeling_transmamba.selective_scan_numba import selective_scan_numba

SCANS: dict[str, Callable] = {
    "numba": selective_scan_numba,
    "sequential": selective_scan_sequential,
    "chunked": selective_scan_chunked,
}
STUDENTS = {"pmamba-t": (4, 384), "vim-t": (2, 384)}  # name -> (directions = groups, d_inner)
# Rough peak bytes per (batch * L * channels * N) element, forward / forward+backward, fp32.
MEMORY_FACTOR = {"sequential": (16, 40), "chunked": (40, 80), "numba": (0, 0)}


def make_inputs(batch: int, groups: int, inner: int, state: int, length: int, grad: bool) -> dict:
    """Mixer-like inputs: softplus(delta + bias) ~ 0.001-0.1, S4D-real A."""
    channels = groups * inner
    tensors = {
        "u": torch.randn(batch, channels, length),
        "delta": torch.randn(batch, channels, length) * 0.5,
        "A": -torch.arange(1, state + 1, dtype=torch.float32).repeat(channels, 1),
        "B": torch.randn(batch, groups, state, length),
        "C": torch.randn(batch, groups, state, length),
        "D": torch.ones(channels),
        "z": torch.randn(batch, channels, length),
        "delta_bias": torch.empty(channels).uniform_(-6.9, -2.3),
    }
    for tensor in tensors.values():
        tensor.requires_grad_(grad)
    return {**tensors, "delta_softplus": True}


def timed(fn: Callable[[], None], budget_s: float, max_repeats: int) -> float:
    """Median wall time in ms after one warm-up, repeating while within ``budget_s``."""
    fn()
    times: list[float] = []
    while len(times) < max_repeats and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def scan_case(name: str, inputs: dict, backward: bool) -> Callable[[], None]:
    scan = SCANS[name]
    if not backward:

        def forward() -> None:
            with torch.no_grad():
                scan(**inputs)

        return forward
    leaves = [v for v in inputs.values() if isinstance(v, torch.Tensor)]

    def forward_backward() -> None:
        out = scan(**inputs)
        torch.autograd.grad(out.sum(), leaves)

    return forward_backward


def bench_scans(args: argparse.Namespace) -> None:
    print(f"scan alone: batch {args.batch}, N {args.state}, torch threads {torch.get_num_threads()}, ms (x numba)")
    names = ["numba", *(name for name in args.backends if name != "numba")]
    header = f"{'student':9} {'L':>5} {'pass':8}" + "".join(f"{name:>22}" for name in names)
    print(header)
    for student in args.students:
        groups, inner = STUDENTS[student]
        for length in args.lengths:
            elements = args.batch * length * groups * inner * args.state
            for backward in (False, True):
                inputs = make_inputs(args.batch, groups, inner, args.state, length, grad=backward)
                times: dict[str, float | None] = {}
                for name in names:
                    if elements * MEMORY_FACTOR[name][backward] > args.max_gb * 2**30:
                        times[name] = None
                        continue
                    times[name] = timed(scan_case(name, inputs, backward), args.budget, args.repeats)
                row = f"{student:9} {length:5d} {'fwd+bwd' if backward else 'fwd':8}"
                for name in names:
                    value = times[name]
                    cell = "skipped" if value is None else f"{value:9.1f} ({value / times['numba']:5.1f}x)"
                    row += f"{cell:>22}"
                print(row, flush=True)


def bench_model(args: argparse.Namespace) -> None:
    """A whole pmamba-t forward at 224 px: how much of the model time the scan backend decides."""
    pixels = torch.randn(args.batch, 3, 224, 224)
    print(f"\npmamba-t forward, batch {args.batch}, 224 px, ms:")
    results = {}
    for backend in ("numba", "sequential"):
        model = TransMambaForImageClassification(TransMambaConfig.from_preset("pmamba-t", scan_backend=backend)).eval()
        with torch.no_grad():
            results[backend] = timed(lambda m=model: m(pixel_values=pixels), args.budget, args.repeats)
        print(f"  {backend:10} {results[backend]:9.1f} ({results[backend] / results['numba']:5.1f}x)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[197, 785, 3137])
    parser.add_argument("--backends", nargs="+", default=list(SCANS), choices=list(SCANS), help="numba always runs")
    parser.add_argument("--repeats", type=int, default=5, help="at most this many timed runs per cell")
    parser.add_argument("--budget", type=float, default=3.0, help="stop repeating a cell after this many seconds")
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip PyTorch cases estimated above this")
    parser.add_argument("--no-model", action="store_true", help="skip the whole-model forward")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_scans(args)
    if not args.no_model:
        bench_model(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
