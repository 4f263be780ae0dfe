"""A/B of the numba token scan against an earlier revision's kernel, same process, interleaved repeats.

The old kernel is taken from git (first argument, default 9b2d171) into a temporary package (as `ab_mixer.py`
does). Cases: pmamba (4 directions, shared inputs and parameters) and vim (2 directions with their own), 384
channels, N 16; forward and forward+backward over every input. Prints the minimum of interleaved repeats.

    T=2 R=5 python benchmarks/ab_kernel.py 9b2d171        # T threads, R repeats, CASES = how many cases
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time

import torch
from ab_mixer import old_mixer_class
from transmamba.modeling_transmamba.selective_scan_numba import selective_scan_numba_tokens as new_scan


def inputs(batch: int, directions: int, inner: int, state: int, length: int, own: bool):
    slots = directions if own else 1
    g = torch.Generator().manual_seed(0)
    tensors = {
        "u": torch.randn(batch, slots, length, inner, generator=g),
        "delta": torch.randn(batch, slots, length, inner, generator=g) * 0.5,
        "A": -torch.arange(1, state + 1.0).repeat(slots, inner, 1),
        "B": torch.randn(batch, directions, length, state, generator=g),
        "C": torch.randn(batch, directions, length, state, generator=g),
        "D": torch.ones(slots, inner),
        "z": torch.randn(batch, 1, length, inner, generator=g),
        "delta_bias": torch.empty(slots, inner).uniform_(-6.9, -2.3, generator=g),
    }
    perm = torch.stack([torch.randperm(length, generator=g) for _ in range(directions)])
    rows = torch.arange(length).expand(directions, length) if own else perm
    return tensors, perm, rows


def run(scan, tensors: dict, perm, rows, backward: bool) -> None:
    if backward:
        leaves = [t.detach().requires_grad_() for t in tensors.values()]
        torch.autograd.grad(scan(*leaves, perm, rows, True, False).sum(), leaves)
    else:
        with torch.no_grad():
            scan(*tensors.values(), perm, rows, True, False)


def main() -> int:
    rev = sys.argv[1] if len(sys.argv) > 1 else "9b2d171"
    torch.set_num_threads(int(os.environ.get("T", "2")))
    old_mixer_class(rev, tempfile.mkdtemp())
    old_scan = importlib.import_module("transmamba_ab_old.selective_scan_numba").selective_scan_numba_tokens
    cases = [("pmamba", 8, 4, False, 196), ("pmamba", 1, 4, False, 196), ("vim", 8, 2, True, 197),
             ("pmamba", 8, 4, False, 784), ("pmamba", 8, 4, False, 3136)]  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads")
    for name, batch, directions, own, length in cases[: int(os.environ.get("CASES", "5"))]:
        tensors, perm, rows = inputs(batch, directions, 384, 16, length, own)
        for backward in (False, True):
            times: dict[str, list[float]] = {"old": [], "new": []}
            scans = {"old": old_scan, "new": new_scan}
            for scan in scans.values():
                run(scan, tensors, perm, rows, backward)  # warm-up
            for _ in range(int(os.environ.get("R", "5"))):
                for key, scan in scans.items():
                    start = time.perf_counter()
                    run(scan, tensors, perm, rows, backward)
                    times[key].append((time.perf_counter() - start) * 1e3)
            old, new = min(times["old"]), min(times["new"])
            mode = "fwd+bwd" if backward else "fwd"
            print(f"{name} b{batch} L{length} {mode}: old {old:.1f} ms, new {new:.1f} ms ({old / new:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
