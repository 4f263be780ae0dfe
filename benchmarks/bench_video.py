"""Video student vs its image ViT teacher applied per frame: forward time and peak memory at 8 and 32 frames.

    python benchmarks/bench_video.py --json benchmarks/results_issue18_video.json

Models, fp32 CPU, batch 1, random weights of the real shapes (speed does not depend on the values):
- ``videomamba-s``: TransVideoMamba-S as subcloned from DINOv2-S/14 (width 384, 12 layers with MLP, patch 14,
  tubelet 1), one sequence ``[cls, (t n)]`` of 1 + frames x 64 tokens at 112 px, scanned forward and backward.
- ``videomamba-s-24``: VideoMamba-S as OpenGVLab builds it: 24 mixer-only blocks (``mlp_ratio=0``), width 384,
  the same tokens; about the same parameters as the teacher, spent on mixers instead of MLPs.
- ``dinov2-frames``: DINOv2-S/14 (`transformers` ``Dinov2Model``, sdpa) on every frame separately, 65 tokens each,
  the teacher as CLIP4Clip uses it (no token sees another frame).
- ``dinov2-joint``: the same encoder on all frames' tokens as one sequence (joint space-time attention, what a
  video Transformer that mixes frames costs; quadratic in frames).
Each configuration runs in a fresh subprocess (its own peak RSS above the RSS once the model and input exist);
times are medians of ``--repeats`` runs after one warm-up. Read the ratios: the machine is shared.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch
from transmamba.model_cards.results import describe_machine

MODELS = ("videomamba-s", "videomamba-s-24", "dinov2-frames", "dinov2-joint")
RESULT = "BENCH_RESULT "


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024


def _reset_peak_rss() -> float:
    """Return freed heap to the OS (glibc malloc_trim), then reset the peak RSS to the current RSS (Linux: 5 to
    clear_refs): the warm-up's freed activations no longer count, the model, input and compiled kernel do."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _peak_rss_mb()


def build(name: str, frames: int, size: int):
    from transformers import Dinov2Config, Dinov2Model
    from transmamba.modeling_transmamba import TransVideoMambaConfig, TransVideoMambaModel

    if name.startswith("videomamba-s"):
        shape = {"num_hidden_layers": 24, "mlp_ratio": 0.0} if name == "videomamba-s-24" else {"num_hidden_layers": 12}
        config = TransVideoMambaConfig.from_preset("videomamba-s", **shape, patch_size=14, image_size=size,
                                                   num_frames=frames, layer_norm_eps=1e-6)  # fmt: skip
        model = TransVideoMambaModel(config).eval()
        return model, lambda x: model(x)
    teacher = Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                                       image_size=size, attn_implementation="sdpa")).eval()  # fmt: skip
    if name == "dinov2-frames":
        return teacher, lambda x: teacher(pixel_values=x.flatten(0, 1))

    def joint(x):
        tokens = teacher.embeddings(x.flatten(0, 1))  # (frames, 65, 384), per-frame positions
        return teacher.layernorm(teacher.encoder(tokens.reshape(1, -1, tokens.shape[-1]))[0])

    return teacher, joint


def one(name: str, frames: int, size: int, repeats: int) -> dict:
    torch.set_num_threads(2)
    model, forward = build(name, frames, size)
    x = torch.randn(1, frames, 3, size, size)
    with torch.no_grad():
        forward(x)  # warm-up (compiles the scan kernel once)
        base = _reset_peak_rss()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - start)
    peak = round(_peak_rss_mb() - base, 1)
    return {"model": name, "frames": frames, "size": size, "median_s": statistics.median(times), "best_s": min(times),
            "peak_mb_above_model": peak, "params": sum(p.numel() for p in model.parameters())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(RESULT + json.dumps(one(args.one[0], int(args.one[1]), args.size, args.repeats)), flush=True)
        return
    results = []
    for frames in args.frames:
        for name in MODELS:
            cmd = [sys.executable, __file__, "--one", name, str(frames), "--size", str(args.size), "--repeats",
                   str(args.repeats)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT)), None)
            if line is None:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            results.append(json.loads(line[len(RESULT) :]))
            print(results[-1], flush=True)
    for r in results:
        ref = next(x for x in results if x["frames"] == r["frames"] and x["model"] == "dinov2-frames")
        r["time_vs_dinov2_frames"] = round(r["median_s"] / ref["median_s"], 3)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{describe_machine()}, shared",
            "threads": 2, "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**meta, "results": results}, handle, indent=2)
    print("| model | frames | tokens | median s | x per-frame teacher | peak MB |")
    for r in results:
        grid = (r["size"] // 14) ** 2
        tokens = 1 + r["frames"] * grid if r["model"].startswith("videomamba") else r["frames"] * (grid + 1)
        tokens = f"{r['frames']} x {grid + 1}" if r["model"] == "dinov2-frames" else tokens
        print(f"| {r['model']} | {r['frames']} | {tokens} | {r['median_s']:.3f} | {r['time_vs_dinov2_frames']:.2f} | "
              f"{r['peak_mb_above_model']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
