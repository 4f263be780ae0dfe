"""Installed class vs an exported folder's own code (what ``trust_remote_code=True`` runs), interleaved in one process.

`bench_students.py --remote-code` runs the two sides in separate fresh processes, one after the other, so their
difference carries the machine's drift between processes (about 10 % here even when idle). This script loads both
in one process with the same weights (the folder is saved from the installed model; the logits are checked equal),
then alternates their forwards repetition by repetition, so drift hits both alike. Both sides load the scan kernel
from the same per-machine numba cache; each side reports the backend its own dispatcher module used.

    python benchmarks/ab_remote.py --models pmamba-t vim-t --resolutions 224 896 --batch-sizes 1 8 \
        --json benchmarks/results_issue14_ab_remote.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_students import _scan_used, remote_class
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba import TransMambaConfig, TransMambaForImageClassification

from transmamba.folders import atomic_write_text


def timed_ms(model: torch.nn.Module, pixels: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(pixel_values=pixels)
    return (time.perf_counter() - start) * 1000


def compare(model_name: str, resolution: int, batch: int, repeats: int, root: str) -> dict:
    """One case: both sides built with the same weights, warmed up once, then timed alternately."""
    torch.manual_seed(0)
    config = TransMambaConfig.from_preset(model_name, image_size=resolution, scan_backend="numba")
    installed = TransMambaForImageClassification(config).eval()
    folder = os.path.join(root, f"{model_name}-{resolution}")
    installed.save_pretrained(folder)
    remote = remote_class(folder).from_pretrained(folder).eval()
    pixels = torch.randn(batch, 3, resolution, resolution)
    with torch.inference_mode():
        difference = (installed(pixel_values=pixels).logits - remote(pixel_values=pixels).logits).abs().max().item()
    times: dict[str, list[float]] = {"installed": [], "remote": []}
    for index in range(repeats):  # ABAB... then BABA... so neither side always runs first
        order = [("installed", installed), ("remote", remote)][:: 1 if index % 2 == 0 else -1]
        for side, model in order:
            times[side].append(round(timed_ms(model, pixels), 1))
    medians = {side: statistics.median(values) for side, values in times.items()}
    return {
        "model": model_name,
        "px": resolution,
        "batch": batch,
        "installed_ms": medians["installed"],
        "remote_ms": medians["remote"],
        "ratio_median": round(medians["remote"] / medians["installed"], 3),
        "ratio_best": round(min(times["remote"]) / min(times["installed"]), 3),
        "times_ms": times,
        "max_logit_difference": difference,
        "backends": {"installed": _scan_used(installed), "remote": _scan_used(remote)},
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pmamba-t", "vim-t"], choices=["pmamba-t", "vim-t"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 896])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per side (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for resolution in args.resolutions:
            for batch in args.batch_sizes:
                for model_name in args.models:
                    row = compare(model_name, resolution, batch, args.repeats, root)
                    rows.append(row)
                    print(f"  {model_name} {resolution}px b{batch}: installed {row['installed_ms']:,.1f} ms, remote "
                          f"{row['remote_ms']:,.1f} ms, remote/installed {row['ratio_median']:.3f} (best "
                          f"{row['ratio_best']:.3f}), logits differ by {row['max_logit_difference']:.1e}, load "
                          f"{row['load_1m']}{row['backends']['remote']}", flush=True)  # fmt: skip
    if args.json:
        record = {"machine": describe_machine(), "threads": args.threads,
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows}  # fmt: skip
        atomic_write_text(Path(args.json), json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
