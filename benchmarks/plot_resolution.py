"""Plot forward (and forward+backward) time against resolution from bench_students.py JSON results.

One panel per (mode, batch), log-log axes, one line per model / scan backend; configurations that timed out or ran
out of memory are left off their line. Later files win when several hold the same configuration.

    python benchmarks/plot_resolution.py benchmarks/results.json --out benchmarks/resolution.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def load(paths: list[str]) -> tuple[list[str], dict[tuple, dict]]:
    """Machine lines and the successful results keyed by (mode, batch, label, resolution)."""
    machines, results = [], {}
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        machines.append(data["machine"])
        for result in data["results"]:
            case = result["case"]
            if result["status"] != "ok":
                continue
            mode = "fwd+bwd" if case["backward"] else "fwd"
            label = case["model"] if case["backend"] == "-" else f"{case['model']} [{case['backend']}]"
            results[(mode, case["batch"], label, case["resolution"])] = result
    if not results:
        raise ValueError(f"No successful configurations in {', '.join(paths)}; run bench_students.py first.")
    return machines, results


def plot(machines: list[str], results: dict[tuple, dict], out: str) -> None:
    panels: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (mode, batch, label, resolution), result in sorted(results.items(), key=lambda item: item[0][3]):
        panels[(mode, batch)][label].append((resolution, result["median_ms"]))
    keys = sorted(panels, key=lambda key: (key[0] != "fwd", key[1]))
    cols = min(2, len(keys))
    rows = -(-len(keys) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    for axis in axes.flat[len(keys) :]:
        axis.set_visible(False)
    models = sorted({label.split(" ")[0] for lines in panels.values() for label in lines})
    colors = {model: f"C{i}" for i, model in enumerate(models)}  # one colour per model, dashes for the slow scan
    for axis, key in zip(axes.flat, keys, strict=False):
        for label, points in sorted(panels[key].items()):
            resolutions, times = zip(*points, strict=True)
            style = "--" if "sequential" in label else "-"
            color = colors[label.split(" ")[0]]
            axis.plot(resolutions, [t / 1000 for t in times], style, color=color, marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        ticks = sorted({r for points in panels[key].values() for r, _ in points})
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.set_xlabel("image size (px, patch 16)")
        axis.set_ylabel("seconds (median)")
        axis.set_title(f"{key[0]}, batch {key[1]}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    dates = sorted(line.split("; ", 1)[0] for line in machines)  # machine lines start with the run's date
    setups = dict.fromkeys(line.split("; ", 1)[-1] for line in machines)
    span = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    figure.suptitle(f"{span}; " + " | ".join(setups), fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON files written by bench_students.py --json")
    parser.add_argument("--out", default="benchmarks/resolution.png", help="PNG to write")
    args = parser.parse_args(argv)
    plot(*load(args.results), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
