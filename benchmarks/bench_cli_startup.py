"""How long `transmamba <command> --help` and an argument error take: each command in a fresh process, median of
``--repeats`` runs, side by side with the cost the lazy imports avoid (importing torch + transformers + our models).

    python benchmarks/bench_cli_startup.py [--repeats 5] [--json benchmarks/results_cli_startup.json]

Target (issue 15): every line within 3 s but ``--help-training`` (which lists every `TrainingArguments` option and
so imports torch, on purpose). Absolute times on a shared machine are noisy; the load average is recorded next to
them (before and after the run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

CASES = {
    "transmamba --help": ["--help"],
    "convert --help": ["convert", "--help"],
    "convert: argument error": ["convert", "--teacher", "t", "--student", "pmamba-t", "--output", "o",
                                "--num_batches", "0"],
    "convert --student videomamba-t --help": ["convert", "--student", "videomamba-t", "--help"],
    "convert (video): argument error": ["convert", "--teacher", "t", "--student", "videomamba-t", "--output", "o",
                                        "--image-size", "0"],
    "run --help": ["run", "--help"],
    "run: argument error": ["run", "--steps", "0"],
    "card --help": ["card", "--help"],
    "card: argument error": ["card", "no-such-folder"],
    "demo --help": ["demo", "--help"],
    "demo: argument error": ["demo", "--image-size", "0"],
    "convert-lm --help": ["convert-lm", "--help"],
    "convert-lm: argument error": ["convert-lm", "--teacher", "t", "--output", "o", "--ssm_chunk_size", "0"],
    "train --help": ["train", "--help"],
    "train: argument error": ["train", "--teacher", "t", "--student", "s", "--alpha", "2"],
    "train-vlm --help": ["train-vlm", "--help"],
    "train-vlm: argument error": ["train-vlm", "--teacher", "t", "--student", "s", "--alpha", "2"],
    "train-lm --help": ["train-lm", "--help"],
    "train-lm: argument error": ["train-lm", "--student", "s", "--alpha", "2"],
    "train-retrieval --help": ["train-retrieval", "--help"],
    "train-retrieval: argument error": ["train-retrieval", "--student", "s", "--projection_dim", "0"],
    "train --help-training (every TrainingArguments option; slow by design)": ["train", "--help-training"],
}  # fmt: skip
REFERENCE = {"import torch, transformers, our models (avoided)": ["-c", "import transmamba.modeling_transmamba"]}


def timed(argv: list[str]) -> tuple[float, int]:
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - begin, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = {}
    cases = {name: ["-m", "transmamba", *argv] for name, argv in CASES.items()} | REFERENCE
    for name, argv in cases.items():
        timed(argv)  # warm the file cache
        runs = [timed(argv) for _ in range(args.repeats)]
        rows[name] = {"median_s": round(statistics.median(t for t, _ in runs), 2),
                      "best_s": round(min(t for t, _ in runs), 2), "exit_code": runs[0][1]}  # fmt: skip
        print(f"| {name} | {rows[name]['median_s']:.2f} | {rows[name]['best_s']:.2f} | {rows[name]['exit_code']} |")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_average_before": load_before,
              "load_average": os.getloadavg(),
              "cpu_count": os.cpu_count(), "repeats": args.repeats, "rows": rows}  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    print(f"load average {record['load_average']}, {record['cpu_count']} cores, {record['date']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
