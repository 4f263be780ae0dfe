"""Issue 13: does ``--mixer-init attention`` (x <- W_V, B <- W_K, C <- W_Q) beat the standard init under logits KD?

Runs on the work folders that ``benchmarks/default_recipe.py`` left (one per dataset and seed, with the fine-tuned
teacher, its cached outputs and the standard-init ``logits`` row): per folder, one resumable stage converts the
teacher with the attention init and trains it with logits KD at the run's defaults. The comparison rows (teacher,
scratch, logits with the standard init) are read from default_recipe's JSON, so both arms share teacher, data and
budget. Results: ``attention_init-<dataset>.json|md`` beside this file, rewritten after every student.

    TRANSMAMBA_CACHE=/tmp/demo_cache python benchmarks/experiments/issue13/attention_init.py --dataset fashion_mnist
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from transformers import HfArgumentParser
from transmamba.conversion.attention_init import SSM_INITS

from transmamba.folders import atomic_write_text

HERE = Path(__file__).parent
ROW = "attention+logits"
COMPARED = ("teacher", "scratch", "logits")


@dataclass
class AttentionArguments:
    dataset: str = field(default="fashion_mnist", metadata={"help": "a dataset name or an imagefolder path"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds to train"})
    work_dir: Path = field(default=Path("default-recipe-work"), metadata={"help": "default_recipe.py's --work_dir"})


def train_one(args: AttentionArguments, seed: int) -> tuple[float, float | None]:
    from transmamba.modeling_transmamba import TransMambaForImageClassification

    from transmamba import run_stages as st
    from transmamba.run_args import RunArguments
    from transmamba.stages import MARKER, Stages

    work = Path(args.work_dir) / f"{Path(args.dataset).name}-s{seed}"
    defaults = RunArguments(dataset=args.dataset, seed=seed, work_dir=work)
    options = replace(defaults, mixer_init="attention")
    markers = {stage: json.loads((work / stage / MARKER).read_text()) for stage in ("teacher", "teacher_outputs")}
    inputs = {"stages": {k: v["inputs_hash"] for k, v in markers.items()}, "mixer_init": SSM_INITS["attention"],
              "mapped_tensors": "inherited rate", "distillation": "logits"}  # fmt: skip

    def work_fn(directory: Path) -> tuple[dict, list[str]]:
        (directory / "convert").mkdir(exist_ok=True)
        st.stage_convert(directory / "convert", options, markers["teacher"]["outputs"])
        converted = directory / "convert" / st.MODEL
        outputs, files = st.stage_student(directory, options, "logits", "subclone", converted)
        outputs["top1"] = st.top1(TransMambaForImageClassification, directory / st.MODEL, st.load_pixels(work))
        return outputs, files

    stages = Stages(work, [ROW])
    outputs = stages.run(ROW, "logits KD from the attention-informed subclone", inputs, work_fn)
    return outputs["top1"], stages.seconds.get(ROW)


def markdown(name: str, rows: dict[str, dict[str, float]]) -> str:
    lines = [f"### {name}", "", "| model | top-1 % (mean ± std) | per seed |", "|---|---|---|"]
    for row, seeds in rows.items():
        values = [100 * seeds[s] for s in sorted(seeds)]
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        lines.append(f"| {row} | {statistics.mean(values):.2f}{spread} ({len(values)} seeds) | "
                     + " / ".join(f"{v:.2f}" for v in values) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(AttentionArguments).parse_args_into_dataclasses(argv)
    name = Path(args.dataset).name
    base = json.loads((HERE / f"default_recipe-{name}.json").read_text())["results"][name]
    out = HERE / f"attention_init-{name}"
    record = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    record.setdefault("results", {})
    for seed in args.seeds:
        top1, seconds = train_one(args, seed)
        record["results"][str(seed)] = {"top1": top1, "seconds": seconds}
        record["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
        done = sorted(record["results"], key=int)
        rows = {row: {s: base[s][row]["top1"] for s in done if row in base.get(s, {})} for row in COMPARED}
        rows[ROW] = {s: record["results"][s]["top1"] for s in done}
        header = (f"Updated {record['updated']}; same work folders, teacher, data and budget as "
                  f"default_recipe-{name} (its rows for the seeds done here).\n\n")  # fmt: skip
        atomic_write_text(out.with_suffix(".md"), header + markdown(name, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
