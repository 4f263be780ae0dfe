"""Issue 13: does the default `transmamba run` win, on more than one dataset and seed?

For every dataset and seed this runs the default pipeline exactly as a user does (`transmamba.run.run` with only
``--dataset``, ``--seed`` and ``--work-dir`` set: the DINOv2-S/14 teacher, 56 px, 150 steps per student), then
trains the comparison students on the same work dir, each a resumable stage reusing the run's cached teacher
outputs and converted student. The run's own student is recorded under its recipe's name (the seed's ``default``
says which); the other recipes are the comparison:

- ``logits``, ``wsab+logits``, ``wsab`` (the paper) and ``feature`` (last-layer feature KD), each from the subclone
  at the default learning rates (the one the run used is not trained twice);
- ``full-lr``: the default recipe with ``--inherited-lr-scale 1`` (the rate before issue 13's split);
- ``half-data``: the default recipe on the first 50 % of the training images.

Results go to ``--out`` as ``.json`` (every student, per seed) and ``.md`` (mean ± std), rewritten after every
student, so a killed run leaves a partial table and a rerun trains only what is missing.

    python benchmarks/default_recipe.py --dataset fashion_mnist /tmp/mnist5k --seeds 0 1 2
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from transformers import HfArgumentParser
from transmamba.model_cards.results import describe_machine

from transmamba.folders import atomic_write_text

DEFAULT = "default"  # the run's own distillation
EXTRAS = {  # name -> (distillation, RunArguments overrides, training fraction), in order of importance
    "wsab": ("wsab", {}, 1.0),
    "logits": ("logits", {}, 1.0),
    "wsab+logits": ("wsab+logits", {}, 1.0),
    "full-lr": (DEFAULT, {"inherited_lr_scale": 1.0}, 1.0),
    "half-data": (DEFAULT, {}, 0.5),
    "feature": ("feature", {}, 1.0),
}
ROWS = ("teacher", "scratch", *EXTRAS)  # the run's own student is under its recipe's name, one of EXTRAS


@dataclass
class ExperimentArguments:
    dataset: list[str] = field(
        default_factory=lambda: ["fashion_mnist"],
        metadata={"help": "datasets, space-separated (a name or an imagefolder path)"},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds of every dataset"})
    work_dir: Path = field(default=Path("default-recipe-work"), metadata={"help": "one run folder per dataset/seed"})
    out: Path = field(
        default=Path(__file__).parent / "experiments" / "issue13" / "default_recipe",
        metadata={"help": "results path without suffix (.json and .md are written)"},
    )

    def __post_init__(self):
        self.work_dir, self.out = Path(self.work_dir), Path(self.out)


def one_seed(args: ExperimentArguments, dataset: str, seed: int, on_row) -> str:
    """The default run, then the comparison students; ``on_row(name, top1, seconds)`` after each. Returns the
    run's default distillation."""
    from transmamba.modeling_transmamba import TransMambaForImageClassification

    from transmamba import run_stages as st
    from transmamba.run import run
    from transmamba.run_args import RunArguments
    from transmamba.stages import MARKER, Stages

    name = Path(dataset).name
    defaults = RunArguments(dataset=dataset, seed=seed, work_dir=args.work_dir / f"{name}-s{seed}")
    outcome = run(defaults)
    results = outcome.results
    for role in ("teacher", "scratch", "transmamba"):
        on_row(defaults.distillation if role == "transmamba" else role, results.accuracy[role],
               results.timings.get(role))  # fmt: skip
    run_hashes = {stage: json.loads((defaults.work_dir / stage / MARKER).read_text())["inputs_hash"]
                  for stage in ("convert", "teacher_outputs", "transmamba")}  # fmt: skip
    stages = Stages(defaults.work_dir, list(EXTRAS))
    pixels = st.load_pixels(defaults.work_dir)
    for extra, (distillation, overrides, fraction) in EXTRAS.items():
        if extra == defaults.distillation:  # the run's own student
            continue
        options = replace(defaults, **overrides)
        distillation = defaults.distillation if distillation == DEFAULT else distillation
        inputs = {"run": run_hashes, "distillation": distillation, "overrides": overrides, "fraction": fraction}

        def work(directory: Path, options=options, distillation=distillation, fraction=fraction):
            outputs, files = st.stage_student(directory, options, distillation, "subclone", train_fraction=fraction)
            outputs["top1"] = st.top1(TransMambaForImageClassification, directory / st.MODEL, pixels)
            return outputs, files

        outputs = stages.run(extra, f"{extra}: {distillation}, {overrides or 'defaults'}, {fraction:.0%} data",
                             inputs, work)  # fmt: skip
        on_row(extra, outputs["top1"], stages.seconds.get(extra))
    return defaults.distillation


def markdown(record: dict) -> str:
    lines = []
    for dataset, seeds in record["results"].items():
        lines += [f"### {dataset}", "", "| model | top-1 % (mean ± std) | per seed |", "|---|---|---|"]
        defaults = {seeds[s].get("default") for s in seeds}
        for row in ROWS:
            values = [100 * seeds[s][row]["top1"] for s in sorted(seeds) if row in seeds[s]]
            if not values:
                continue
            label = f"{row} (the default run)" if row in defaults else row
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            per_seed = " / ".join(f"{v:.2f}" for v in values)
            count = f"{len(values)} seed" + "s" * (len(values) > 1)
            lines.append(f"| {label} | {statistics.mean(values):.2f}{spread} ({count}) | {per_seed} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ExperimentArguments).parse_args_into_dataclasses(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = args.out.with_suffix(".json")
    record = json.loads(path.read_text()) if path.is_file() else {"results": {}}
    record["machine"] = f"{describe_machine()}, shared; OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "all")
    record["budget"] = "transmamba run defaults (DINOv2-S/14 teacher 300 steps, students 150 steps x 32, 56 px)"
    for seed in args.seeds:  # seed-major: a partial run has every dataset's first seeds
        for dataset in args.dataset:
            rows = record["results"].setdefault(Path(dataset).name, {}).setdefault(str(seed), {})

            def on_row(row: str, top1: float, seconds: float | None, rows=rows) -> None:
                rows[row] = {"top1": top1, "seconds": seconds}
                record["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                atomic_write_text(path, json.dumps(record, indent=1) + "\n")
                header = f"Updated {record['updated']}; {record['machine']}; {record['budget']}.\n\n"
                atomic_write_text(args.out.with_suffix(".md"), header + markdown(record))

            rows["default"] = one_seed(args, dataset, seed, on_row)
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
