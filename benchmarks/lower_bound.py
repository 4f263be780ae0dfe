"""A measured lower bound for a forward pass: what the model's big operations cost at this machine's best speed.

The bound is the sum of two parts, each measured here, in one process, at the given thread count:
- every Linear / convolution the model calls (found with forward hooks, so the shapes are the model's own),
  plus DeiT's attention matmuls, timed alone as dense GEMMs at the GFLOP/s the BLAS reaches on those shapes;
- for the students, the selective scan's per-state work at the throughput a cache-resident, vectorised numba
  loop reaches for exactly that arithmetic (no gathers, no layout work): one exponential per token, channel and
  state (`B*L*E*N`; times K with per-direction parameters, as in ViM: with shared ones every direction reads the
  same `exp(dt A)`), plus the state update and read-out per batch, token, direction, channel and state
  (`B*L*K*E*N`), each timed alone with the kernel's own fp32 exp.
Everything else (norms, activations, the depthwise conv's memory traffic, copies) is left out, so the real
forward can only be slower: `model / bound` says how much is left to win. The model's own forward is timed in
the same run.

    python benchmarks/lower_bound.py --json benchmarks/results_lower_bound.json      # 224/448/896 px, batch 8, 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter

import numba
import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from bench_students import Case, _build, _prime_kernels  # noqa: E402  (one model factory for every benchmark)
from transmamba.model_cards.results import describe_machine  # noqa: E402
from transmamba.modeling_transmamba.selective_scan_numba_math import LANES, fast_exp  # noqa: E402  (the kernel's exp)

MODELS = ("deit-t", "pmamba-t", "vim-t")


def _best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def _gemm_calls(model: nn.Module, inputs: dict) -> Counter:
    """(rows, in_features, out_features) of every Linear call and groups=1 conv, as the model makes them."""
    calls: Counter = Counter()

    def linear_hook(module, args, _output):
        x = args[0]
        calls[(x.numel() // x.shape[-1], module.in_features, module.out_features)] += 1

    def conv_hook(module, args, output):
        if module.groups == 1:  # the patch embedding: a GEMM over patches
            kernel = module.in_channels * int(np.prod(module.kernel_size))
            calls[(output.numel() // output.shape[1], kernel, module.out_channels)] += 1

    handles = [
        m.register_forward_hook(linear_hook if isinstance(m, nn.Linear) else conv_hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.inference_mode():
        model(**inputs)
    for handle in handles:
        handle.remove()
    return calls


def _attention_calls(model: nn.Module, inputs: dict) -> Counter:
    """DeiT's two attention matmuls per layer, as batched GEMMs (batch*heads, tokens, head_dim)."""
    config = model.config
    if not hasattr(config, "num_attention_heads") or config.model_type == "transmamba":
        return Counter()
    batch = inputs["pixel_values"].shape[0]
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    return Counter({(batch * heads, tokens, head_dim): 2 * config.num_hidden_layers})


def linear_bound_ms(calls: Counter, attention: Counter) -> tuple[float, float]:
    """(ms, GFLOP) of the GEMMs, each shape timed alone."""
    total_ms = total_flop = 0.0
    for (rows, k, n), count in calls.items():
        a, w = torch.randn(rows, k), torch.randn(n, k)
        total_ms += count * _best_ms(lambda a=a, w=w: torch.nn.functional.linear(a, w))
        total_flop += count * 2 * rows * k * n
    for (bh, tokens, head_dim), count in attention.items():
        q, k = torch.randn(bh, tokens, head_dim), torch.randn(bh, head_dim, tokens)
        scores = torch.randn(bh, tokens, tokens)
        # QK^T and (softmax) V cost the same FLOPs; time each once per counted pair
        pair = _best_ms(lambda q=q, k=k: torch.bmm(q, k)) + _best_ms(lambda s=scores, q=q: torch.bmm(s, q))
        total_ms += count / 2 * pair
        total_flop += count * 2 * bh * tokens * tokens * head_dim
    return total_ms, total_flop / 1e9


@numba.njit(parallel=True, fastmath=True, error_model="numpy")
def _exp_core(dt, rates, out):
    """Only the exponentials: ``out = exp(dt * rate)`` over L2-resident rows, one row of LANES per task."""
    for task in numba.prange(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[task, i, j] = fast_exp(dt[task, j] * rates[i, j])


@numba.njit(parallel=True, fastmath=True, error_model="numpy")
def _update_core(decays, drives, B, C, y):
    """Only the state updates and read-outs, with the decays already in L1: ``h = a h + d b``, ``y += c h``,
    vectorised over LANES channels (the kernel's inner loop with no gather, no exp and no layout work)."""
    steps, state, lanes = B.shape[1], decays.shape[1], decays.shape[2]
    for task in numba.prange(y.shape[0]):
        h = np.zeros((state, lanes), np.float32)
        for t in range(steps):
            acc = y[task, t]
            for n in range(state):
                b, c = B[task, t, n], C[task, t, n]
                for j in range(lanes):
                    h[n, j] = decays[task, n, j] * h[n, j] + drives[task, j] * b
                    acc[j] += c * h[n, j]


def scan_bound_ms(config, batch: int, tokens: int) -> tuple[float, int, int]:
    """(ms, exponentials, state updates) of one forward's scans. A direction reads ``exp(dt A)`` of its token; with
    shared parameters (PlainMamba) all directions read the same one, so it is computed once per token:
    ``B*L*E*N`` exponentials (``B*L*K*E*N`` with per-direction parameters) and ``B*L*K*E*N`` updates."""
    directions, inner, state = len(config.scan_directions), config.intermediate_size, config.state_size
    per_layer_exps = batch * tokens * inner * state * (1 if config.share_ssm_params else directions)
    per_layer_updates = batch * tokens * directions * inner * state
    rng = np.random.default_rng(0)
    tasks, lanes, rows = 2 * numba.get_num_threads(), LANES, 256
    dt = rng.uniform(0.001, 0.1, (tasks, lanes)).astype(np.float32)
    rates = -rng.uniform(0.5, 16, (rows, lanes)).astype(np.float32)
    table = np.empty((tasks, rows, lanes), np.float32)
    exp_s = _best_ms(lambda: _exp_core(dt, rates, table)) / 1e3 / table.size
    decays = rng.uniform(0.5, 1.0, (tasks, state, lanes)).astype(np.float32)
    drives = rng.standard_normal((tasks, lanes)).astype(np.float32)
    B, C = (rng.standard_normal((tasks, rows, state)).astype(np.float32) for _ in range(2))
    y = np.zeros((tasks, rows, lanes), np.float32)
    update_s = _best_ms(lambda: _update_core(decays, drives, B, C, y)) / 1e3 / (tasks * rows * state * lanes)
    layers = config.num_hidden_layers
    ms = 1e3 * layers * (per_layer_exps * exp_s + per_layer_updates * update_s)
    return ms, per_layer_exps * layers, per_layer_updates * layers


def measure(model_name: str, resolution: int, batch: int) -> dict:
    torch.manual_seed(0)
    case = Case(model_name, "-" if model_name == "deit-t" else "numba", resolution, batch, False)
    model, inputs = _build(case)
    _prime_kernels(case)

    def forward():
        with torch.inference_mode():
            model(**inputs)

    forward()
    model_ms = statistics.median(_best_ms(forward, repeats=1) for _ in range(3))
    gemm_ms, gflop = linear_bound_ms(_gemm_calls(model, inputs), _attention_calls(model, inputs))
    scan_ms, exps, updates = (0.0, 0, 0)
    if model_name != "deit-t":
        scan_ms, exps, updates = scan_bound_ms(model.config, batch, (resolution // 16) ** 2 + (model_name == "vim-t"))
    bound = gemm_ms + scan_ms
    return {
        "model": model_name,
        "px": resolution,
        "batch": batch,
        "model_ms": round(model_ms, 1),
        "gemm_ms": round(gemm_ms, 1),
        "gemm_gflop": round(gflop, 2),
        "gemm_gflops": round(gflop / gemm_ms * 1e3, 1),
        "scan_ms": round(scan_ms, 1),
        "scan_gexps": round(exps / 1e9, 3),
        "scan_gupdates": round(updates / 1e9, 3),
        "bound_ms": round(bound, 1),
        "model_over_bound": round(model_ms / bound, 2),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| px | batch | model | model ms | GEMM ms (GFLOP/s) | scan ms (G exps / G updates) | bound ms |"
        " model / bound | bound / DeiT bound | model / DeiT |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    deit = {(r["px"], r["batch"]): r for r in rows if r["model"] == "deit-t"}
    for r in rows:
        ref = deit.get((r["px"], r["batch"]))
        scan = f"{r['scan_ms']:,} ({r['scan_gexps']} / {r['scan_gupdates']})" if r["scan_ms"] else "-"
        lines.append(
            f"| {r['px']} | {r['batch']} | {r['model']} | {r['model_ms']:,} | {r['gemm_ms']:,} ({r['gemm_gflops']}) |"
            f" {scan} | {r['bound_ms']:,} | {r['model_over_bound']}x |"
            f" {r['bound_ms'] / ref['bound_ms']:.2f}x | {r['model_ms'] / ref['model_ms']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 448, 896])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    rows = []
    for batch in args.batch_sizes:
        for px in args.resolutions:
            for name in ["deit-t", *[m for m in args.models if m != "deit-t"]]:
                rows.append(measure(name, px, batch))
                print(json.dumps(rows[-1]), flush=True)
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {describe_machine()}, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(header + "\n\n" + markdown(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": header, "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
