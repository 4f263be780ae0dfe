"""A/B of the students' mixer against an earlier revision, in one process, with DeiT-Tiny side by side.

The old mixer is taken from git (``--rev``, default e058925: the channel-major layout before issue 5's token-major
rewrite) into a temporary package; each student is built once and a copy gets the old mixers with the same weights,
so both compute the same function (checked on the logits). Models run interleaved, repetition by repetition, so
load from other jobs hits them alike: read the ratios. The 1-minute load average is printed with the results.

    python benchmarks/ab_mixer.py --resolution 224                 # batch 8 forward, 2 threads
    python benchmarks/ab_mixer.py --resolution 224 --backward      # forward+backward
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_students import Case, _build
from transmamba.modeling_transmamba import TransMambaConfig, TransMambaForImageClassification

ROOT = Path(__file__).resolve().parent.parent


def old_mixer_class(rev: str, folder: str):
    """``TransMambaMixer`` of ``modeling_transmamba/`` at ``rev``, imported from a copy without its __init__."""
    package = Path(folder) / "transmamba_ab_old"
    package.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{rev}:modeling_transmamba"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split()
    for name in (n.decode() for n in names):
        if name.endswith(".py"):
            source = subprocess.run(
                ["git", "show", f"{rev}:modeling_transmamba/{name}"], cwd=ROOT, check=True, capture_output=True
            ).stdout
            (package / name).write_bytes(b"" if name == "__init__.py" else source)  # no Auto* re-registration
    sys.path.insert(0, folder)
    return importlib.import_module("transmamba_ab_old.mixer").TransMambaMixer


def with_old_mixers(model: TransMambaForImageClassification, mixer_class) -> TransMambaForImageClassification:
    old = copy.deepcopy(model)
    for layer in old.transmamba.layers:
        mixer = mixer_class(model.config)
        mixer.load_state_dict(layer.mixer.state_dict())
        layer.mixer = mixer
    return old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="e058925", help="git revision of the old mixer")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backward", action="store_true", help="time forward+backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["pmamba-t", "vim-t"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {"deit-t": _build(Case("deit-t", "-", args.resolution, args.batch, args.backward))}
    pixels = {"pixel_values": torch.randn(args.batch, 3, args.resolution, args.resolution)}
    with tempfile.TemporaryDirectory() as folder:
        mixer_class = old_mixer_class(args.rev, folder)
        for preset in args.presets:
            config = TransMambaConfig.from_preset(preset, image_size=args.resolution, scan_backend="numba")
            new = TransMambaForImageClassification(config).eval()
            old = with_old_mixers(new, mixer_class)
            with torch.no_grad():  # not inference mode: the old mixer caches its scan orders on first use
                a, b = new(pixel_values=pixels["pixel_values"][:2]).logits, old(**pixels).logits[:2]
            print(f"{preset}: logits old vs new, max rel. difference {((a - b).abs().max() / b.abs().max()):.1e}")
            models[f"{preset} old"], models[f"{preset} new"] = (old, pixels), (new, pixels)

        def step(model, inputs) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            if args.backward:
                model(**inputs)[0].float().mean().backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode():
                    model(**inputs)
            return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

        for model, inputs in models.values():  # warm-up: kernels, thread pools, scan orders
            step(model, inputs)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        loads = []
        for _ in range(args.repeats):
            loads.append(os.getloadavg()[0])
            for name, (model, inputs) in models.items():
                times[name].append(step(model, inputs))

    mode = "fwd+bwd" if args.backward else "fwd"
    print(
        f"{mode}, batch {args.batch}, {args.resolution} px, {args.threads} threads, {args.repeats} repeats, "
        f"load average {min(loads):.2f}-{max(loads):.2f}"
    )
    base_wall = statistics.median(t[0] for t in times["deit-t"])
    base_cpu = statistics.median(t[1] for t in times["deit-t"])
    print("| model | ms (median) | vs DeiT | CPU ms | vs DeiT |\n|---|---:|---:|---:|---:|")
    for name, values in times.items():
        wall, cpu = statistics.median(t[0] for t in values), statistics.median(t[1] for t in values)
        print(f"| {name} | {wall:,.0f} | {wall / base_wall:.2f}x | {cpu:,.0f} | {cpu / base_cpu:.2f}x |")
    for preset in args.presets:
        old, new = (statistics.median(t[0] for t in times[f"{preset} {v}"]) for v in ("old", "new"))
        print(f"{preset}: new is {old / new:.2f}x faster than old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
