"""`transmamba demo`: build each student preset, classify one image, and print its size and speed."""

from __future__ import annotations

import argparse
import time

import torch

from .modeling_transmamba import PRESETS, TransMambaConfig, TransMambaForImageClassification
from .modeling_transmamba.selective_scan import resolve_backend


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmamba demo",
        description="Build TransMamba student presets with random weights, run a forward pass and print "
        "parameter counts, output shapes and forward time. Needs no network and no GPU.",
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS), help="presets to build")
    parser.add_argument("--image-size", type=int, default=224, help="input resolution in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per forward pass (default 2)")
    parser.add_argument("--num-labels", type=int, default=1000, help="classifier outputs (default 1000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.manual_seed(0)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    print(f"scan backend on cpu: {resolve_backend('auto', torch.device('cpu'))}")
    print(f"{'preset':<10} {'params':>10} {'tokens':>7} {'directions':>10} {'logits':<14} {'forward':>10}")
    for name in args.presets:
        config = TransMambaConfig.from_preset(name, image_size=args.image_size, num_labels=args.num_labels)
        model = TransMambaForImageClassification(config).eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            model(pixels[:1])  # warm-up (kernel compilation, allocator)
            start = time.perf_counter()
            out = model(pixels, output_direction_outputs=True)
            elapsed = time.perf_counter() - start
        tokens = out.direction_outputs[0].shape[2]
        print(
            f"{name:<10} {params / 1e6:>9.2f}M {tokens:>7} {config.num_directions:>10} "
            f"{str(tuple(out.logits.shape)):<14} {elapsed * 1000:>8.0f}ms"
        )
    return 0
