"""Generation on CPU: the TransLlavaMamba student's language model vs the same-size LLaMA (sdpa, KV cache).

Both models share the teacher's shape (hidden size, depth, MLP, vocabulary); the student's attention is the
Mamba mixer (expand 2, state 16, conv 4). For each prompt length, ``generate()`` runs greedy for a fixed number of
new tokens in a fresh subprocess, so memory figures are that run's own. Reported per case:

* prefill: seconds until the first new token;
* per token: median seconds between consecutive new tokens (timestamps from a streamer), best of ``--repeats``
  runs (the first also compiles numba kernels);
* cache: bytes held by the cache after generation (recurrent state vs keys/values), exact;
* paired: both models in one process, decode steps alternating, median per-step time ratio (robust to load);
* decode RSS: growth of the peak RSS during decoding (after the first new token; 0 when the prefill's peak is
  never exceeded), and the process's peak RSS (prefill included).

Text-only prompts: the image tokens are ordinary prompt tokens to the language model, so they add nothing here.

    python benchmarks/bench_generation.py --quick          # smoke test, ~1 minute
    python benchmarks/bench_generation.py                  # prompts 512 / 2k / 8k, 128 new tokens
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba import TransLlavaMambaConfig, TransLlavaMambaForConditionalGeneration
from transmamba.modeling_transmamba.selective_scan import resolve_backend

RESULT_PREFIX = "BENCH_RESULT "
MODELS = ("mamba", "llama")
TINY_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
)


class TokenClock(BaseStreamer):
    """Timestamps each ``put`` (the prompt, then one per new token) and the peak RSS at the first new token."""

    def __init__(self):
        self.times: list[float] = []
        self.rss_at_first_token_kib = 0

    def put(self, value):
        self.times.append(time.perf_counter())
        if len(self.times) == 2:
            self.rss_at_first_token_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def end(self):
        pass


def build(model: str, args: argparse.Namespace) -> torch.nn.Module:
    shape = dict(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        eos_token_id=None,
    )
    if model == "llama":
        heads = args.hidden_size // 64
        config = LlamaConfig(
            **shape, num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=16384
        )
        return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    text = dict(shape, state_size=16, expand=2, conv_kernel=4, scan_backend=args.scan_backend)
    config = TransLlavaMambaConfig(vision_config=dict(TINY_VISION), text_config=text, image_token_id=0)
    return TransLlavaMambaForConditionalGeneration(config).eval()


def cache_bytes(cache) -> int:
    if hasattr(cache, "nbytes"):
        return cache.nbytes()
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def run_case(model_name: str, prompt: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build(model_name, args)
    ids = torch.randint(1, args.vocab_size, (1, prompt))
    runs = []
    for _ in range(args.repeats):  # the best of a few runs: the machine is shared, the noise is one-sided
        clock = TokenClock()
        with torch.no_grad():
            start = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                streamer=clock,
                return_dict_in_generate=True,
            )
        gaps = [b - a for a, b in zip(clock.times[1:-1], clock.times[2:], strict=True)]
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runs.append((statistics.median(gaps), clock.times[1] - start, peak_kib - clock.rss_at_first_token_kib))
    return {
        "model": model_name,
        "prompt": prompt,
        "new_tokens": out.sequences.shape[1] - prompt,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "prefill_s": min(run[1] for run in runs),
        "per_token_ms": 1e3 * min(run[0] for run in runs),
        "cache_mib": cache_bytes(out.cache) / 2**20,
        "decode_rss_growth_mib": runs[0][2] / 1024,  # the first run's: later runs reuse its memory
        "peak_rss_mib": peak_kib / 1024,
    }


def run_paired(prompt: int, args: argparse.Namespace) -> dict:
    """Both models in one process, decode steps alternating (greedy, each with its own cache), so a load change
    on the shared machine hits both alike: the per-step time ratio is robust where absolute times are not."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = {name: build(name, args) for name in MODELS}
    ids = torch.randint(1, args.vocab_size, (1, prompt))
    caches, tokens, times = {}, {}, {name: [] for name in MODELS}
    with torch.no_grad():
        for name, model in models.items():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            caches[name], tokens[name] = out.cache, out.logits[:, -1:].argmax(-1)
        for _ in range(args.new_tokens):
            for name, model in models.items():
                start = time.perf_counter()
                out = model(input_ids=tokens[name], cache=caches[name], use_cache=True)
                times[name].append(time.perf_counter() - start)
                caches[name], tokens[name] = out.cache, out.logits[:, -1:].argmax(-1)
    ratios = [m / ll for m, ll in zip(times["mamba"], times["llama"], strict=True)]
    return {
        "prompt": prompt,
        **{f"{name}_ms": 1e3 * statistics.median(times[name]) for name in MODELS},
        "ratio": statistics.median(ratios),
    }


def run_child(case: str, forwarded: list[str], threads: int) -> dict | str:
    """Run one case in a fresh process; its result, or the last line of its error."""
    command = [sys.executable, __file__, *forwarded, "--case", case]
    # numba's default "omp" threading layer next to torch's OpenMP makes every later torch.exp ~1000x slower
    # on this machine (measured: 0.015 ms -> 20 ms for 16k floats); "workqueue" does not.
    env = {"NUMBA_THREADING_LAYER": "workqueue", **os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        return f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--intermediate-size", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="generate() runs per case; the fastest counts")
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--quick", action="store_true", help="prompts 128/512, 16 new tokens, 2 layers")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: "model:prompt" or "paired:prompt"
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.new_tokens, args.layers, args.repeats = [128, 512], 16, 2, 1
    if args.case:
        model_name, prompt = args.case.split(":")
        result = run_paired(int(prompt), args) if model_name == "paired" else run_case(model_name, int(prompt), args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    forwarded = argv if argv is not None else sys.argv[1:]  # a child runs one case and returns before --json
    backend = resolve_backend(args.scan_backend, torch.device("cpu"))
    print(
        f"# CPU generation benchmark: {describe_machine()}, transformers {transformers.__version__}, "
        f"{args.threads} threads, scan backend {backend}; hidden "
        f"{args.hidden_size}, {args.layers} layers, MLP {args.intermediate_size}, vocab {args.vocab_size}, "
        f"{args.new_tokens} new tokens, greedy, batch 1"
    )
    header = f"{'model':<7}{'prompt':>7}{'params M':>10}{'prefill s':>11}{'ms/token':>10}{'cache MiB':>11}"
    print(header + f"{'decode RSS +MiB':>17}{'peak RSS MiB':>14}")
    results = []
    for prompt in args.prompts:
        for model_name in MODELS:
            r = run_child(f"{model_name}:{prompt}", forwarded, args.threads)
            if isinstance(r, str):
                print(f"{model_name:<7}{prompt:>7}  {r}")
                continue
            results.append(r)
            print(
                f"{r['model']:<7}{r['prompt']:>7}{r['params_m']:>10.1f}{r['prefill_s']:>11.2f}"
                f"{r['per_token_ms']:>10.2f}{r['cache_mib']:>11.3f}{r['decode_rss_growth_mib']:>17.1f}"
                f"{r['peak_rss_mib']:>14.0f}",
                flush=True,
            )
    print("# paired decode (one process, steps alternating): median ms per new token, median per-step ratio")
    print(f"{'prompt':>7}{'mamba ms':>10}{'llama ms':>10}{'mamba/llama':>13}{'cache llama/mamba':>19}")
    by_prompt = {(r["model"], r["prompt"]): r for r in results}
    for prompt in args.prompts:
        r = run_child(f"paired:{prompt}", forwarded, args.threads)
        if isinstance(r, str):
            print(f"{prompt:>7}  {r}")
            continue
        results.append({"model": "paired", **r})
        mamba, llama = by_prompt.get(("mamba", prompt)), by_prompt.get(("llama", prompt))
        cache_ratio = f"{llama['cache_mib'] / mamba['cache_mib']:.0f}x" if mamba and llama else "-"
        print(
            f"{prompt:>7}{r['mamba_ms']:>10.2f}{r['llama_ms']:>10.2f}{r['ratio']:>13.2f}{cache_ratio:>19}", flush=True
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
