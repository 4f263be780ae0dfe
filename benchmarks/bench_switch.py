"""TransMamba-switch against a same-size `transformers` LLaMA (sdpa, DynamicCache), side by side in one run.

For each prompt length: prefill time, per-token decode time (mean of ``--decode`` greedy steps after the prefill)
and peak memory (each measurement runs in a fresh subprocess; peak RSS above the process's RSS after building the
model, plus the cache's own bytes). Then the SSM part alone: the chunked SSD (what the model runs) against the
sequential reference recurrence, forward only.

    OMP_NUM_THREADS=1 python benchmarks/bench_switch.py --lengths 2048 8192 32768 --out benchmarks/results_issue16.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transmamba.modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM
from transmamba.modeling_transmamba.switch_ssm import ssd_chunked, ssm_sequential

SHAPE = dict(vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4)


def build(kind: str, transpoint: int):
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**SHAPE, attn_implementation="sdpa")).eval()
    return TransMambaSwitchForCausalLM(TransMambaSwitchConfig(**SHAPE, transpoints=transpoint)).eval()


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


@torch.no_grad()
def measure_one(kind: str, length: int, decode: int, transpoint: int) -> dict:
    torch.manual_seed(0)
    model = build(kind, transpoint)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, length))
    base = rss_mb()
    start = time.perf_counter()
    if kind == "llama":
        out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
    else:
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache = out.cache
    prefill = time.perf_counter() - start
    token = out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(decode):
        if kind == "llama":
            out = model(token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        else:
            out = model(token, cache=cache, use_cache=True)
            cache = out.cache
        token = out.logits[:, -1:].argmax(-1)
    per_token = (time.perf_counter() - start) / decode
    if kind == "llama":
        cache_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    else:
        cache_bytes = cache.nbytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": kind, "length": length, "prefill_s": prefill, "decode_ms_per_token": per_token * 1e3,
            "peak_rss_above_model_mb": peak - base, "cache_mb_after_decode": cache_bytes / 2**20}  # fmt: skip


def ssm_part(lengths: list[int]) -> list[dict]:
    rows = []
    for n in lengths:
        q, k, v = (torch.randn(1, 4, n, 64) for _ in range(3))
        delta = torch.rand(1, 4, n) * 0.1
        log_decay = -delta
        timings = {}
        inputs = (q, k, v, delta, log_decay)
        for name, fn in (("chunked", ssd_chunked), ("sequential", ssm_sequential)):
            fn(*inputs)
            start = time.perf_counter()
            fn(*inputs)
            timings[name] = time.perf_counter() - start
        rows.append({"length": n, "chunked_ms": timings["chunked"] * 1e3, "sequential_ms": timings["sequential"] * 1e3,
                     "speedup": timings["sequential"] / timings["chunked"]})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--decode", type=int, default=16)
    parser.add_argument("--transpoint", type=int, default=1024)
    parser.add_argument("--ssm-lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.decode, args.transpoint)))
        return
    rows = []
    for length in args.lengths:
        for kind in ("llama", "switch"):
            cmd = [sys.executable, __file__, "--one", kind, str(length), "--decode", str(args.decode),
                   "--transpoint", str(args.transpoint)]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"2-core CPU, shared; torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "shape": SHAPE,
        "switch_transpoint": args.transpoint,
        "models": rows,
        "ssm_part": ssm_part(args.ssm_lengths),
    }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
