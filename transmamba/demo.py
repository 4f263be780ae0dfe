"""`transmamba demo`: build each student preset, classify random images, and print its size and speed.

The library call is `demo(DemoArguments) -> list[DemoRow]`. `DemoArguments` checks the numbers first (no import),
then each preset's config (that imports the models), so every bad value is one message before any model is built.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .cli_support import command_main, option, parser_for

PROG = "transmamba demo"
DESCRIPTION = """Build TransMamba student presets with random weights, run a forward pass and print parameter
counts, output shapes and forward time. Needs no network and no GPU."""


@dataclass
class DemoArguments:
    presets: list[str] | None = option(None, help="Presets to build (default: every one, e.g. pmamba-t vim-t).")
    image_size: int = option(224, help="Input resolution in pixels (a multiple of the presets' patch size, 16).")
    batch_size: int = option(2, help="Images per timed forward pass.")
    num_labels: int = option(1000, help="Classifier outputs.")

    def __post_init__(self) -> None:
        low = [f"--{name}" for name in ("image_size", "batch_size", "num_labels") if getattr(self, name) < 1]
        if low:
            raise ValueError(f"{', '.join(low)} must be at least 1.")
        if self.presets is not None and not self.presets:
            raise ValueError("--presets is empty; name at least one preset or leave it out for all of them.")
        self.configs()  # unknown presets and an image size the patches do not tile: one ValueError each

    def configs(self) -> dict:
        """Preset name -> its `TransMambaConfig` at this image size and label count."""
        from .modeling_transmamba import PRESETS, TransMambaConfig

        names = self.presets or list(PRESETS)
        return {name: TransMambaConfig.from_preset(name, image_size=self.image_size, num_labels=self.num_labels)
                for name in names}  # fmt: skip


@dataclass
class DemoRow:
    """One preset's figures: parameters, tokens per direction, scan directions, logits shape, forward seconds."""

    preset: str
    parameters: int
    tokens: int
    directions: int
    logits_shape: tuple[int, ...]
    forward_s: float


def demo(args: DemoArguments) -> list[DemoRow]:
    """Each preset with random weights: one warm-up forward (kernel compilation), then one timed batch."""
    import time

    import torch

    from .modeling_transmamba import TransMambaForImageClassification

    torch.manual_seed(0)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    rows = []
    for name, config in args.configs().items():
        model = TransMambaForImageClassification(config).eval()
        with torch.inference_mode():
            model(pixels[:1])
            start = time.perf_counter()
            out = model(pixels, output_direction_outputs=True)
            elapsed = time.perf_counter() - start
        rows.append(DemoRow(name, model.num_parameters(), out.direction_outputs[0].shape[2], config.num_directions,
                            tuple(out.logits.shape), elapsed))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on a bad value (one message, nothing built)."""
    return command_main(lambda: parser_for((DemoArguments,), PROG, DESCRIPTION), argv, PROG, _command)


def _command(args: DemoArguments) -> int:
    import torch

    from .modeling_transmamba.selective_scan import resolve_backend

    print(f"scan backend on cpu: {resolve_backend('auto', torch.device('cpu'))}")
    print(f"{'preset':<10} {'params':>10} {'tokens':>7} {'directions':>10} {'logits':<14} {'forward':>10}")
    for row in demo(args):
        print(f"{row.preset:<10} {row.parameters / 1e6:>9.2f}M {row.tokens:>7} {row.directions:>10} "
              f"{str(row.logits_shape):<14} {row.forward_s * 1000:>8.0f}ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
