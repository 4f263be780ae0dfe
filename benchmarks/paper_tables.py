"""The paper's claims on a real pretrained teacher: analogues of TransMamba's Tables 2, 5, 6 and Figure 3.

    python benchmarks/paper_tables.py table2     # or table5, table6, figure3, recipes, all

``--teacher`` is any ViT-family folder or Hub id; by default the offline DINOv2-S/14 that ``transmamba run``
uses (``transmamba.pretrained_teacher``), exactly as ``facebook/dinov2-small`` would be used online.
``recipes`` compares the candidate defaults of ``transmamba run`` (scratch, WSAB, WSAB + logits KD, logits KD,
feature KD, and the attention-informed mixer init) over every seed, and logits KD without subcloning
(``scratch-logits``: is the subclone what helps, or the soft labels?), and logits KD on half the training
images (``logits-half``, and ``feature-half`` for the default: Table 6's claim that 50 % with the method beats
scratch on 100 %), and WSAB with the
other layer weightings (``wsab-uniform``, ``wsab-aligned``: is the paper's adaptive weighting what helps?). Its
table is rewritten after every student, so a partial run leaves partial results. The run fine-tunes
a head (and the encoder, ``--teacher-tune all``) on Fashion-MNIST, converts it into PMamba-S / ViM-S students of
the same width and depth, and trains every student for the same steps on the same cached data with the same
pipeline code as ``transmamba run`` (``transmamba.run_stages.stage_student``). Every student is a resumable stage
under ``--work-dir``: rerunning a table trains only what is missing. Results go to ``--out-dir`` as
``<table>.json`` and ``<table>.md`` (and the curves, ``figure3.png`` / ``recipes.png``), with the budget and the
paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import AutoModelForImageClassification
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba import TransMambaForImageClassification

from transmamba import run_stages as pipeline
from transmamba.folders import atomic_write_text
from transmamba.pretrained_teacher import DEFAULT_TEACHER, resolve_teacher
from transmamba.run_args import RunArguments
from transmamba.stages import Stages

PAPER = {  # DESIGN.md, "Paper figures" (top-1 %)
    "table2": "CIFAR-100 PMamba-T 78.55 -> TransPMamba-T 81.20; ImageNet-100 84.48 -> 87.10; ImageNet-1k PMamba-B "
    "80.06 -> 81.29, ViM-S 80.5 -> 81.01 (300 epochs, DeiT teachers)",
    "table5": "feature KD < logits KD < WSAB (the paper's ablation order; its Table 5 values are not in DESIGN.md)",
    "recipes": "Table 5 order feature KD < logits KD < WSAB; Table 2 gains +2.6 (PMamba-T) over scratch",
    "table6": "ImageNet-100, TransPMamba-T with 25/50/75/100 % of the data: 83.20 / 87.02 / 87.10 / 86.96 "
    "(scratch at 100 %: 84.48)",
}


@dataclass(frozen=True)
class Student:
    """One trained student: family (preset), init (subclone/scratch), distillation, data fraction, seed."""

    family: str
    init: str
    distillation: str
    fraction: float = 1.0
    seed: int = 0
    curves: bool = False
    mixer_init: str = "standard"
    weighting: str = "misaligned"  # WSAB's layer weights (the paper's by default)

    @property
    def name(self) -> str:
        attention = "-attn" if self.mixer_init == "attention" else ""
        weighting = f"-{self.weighting}" if self.weighting != "misaligned" else ""
        return (f"{self.family}-{self.init}-{self.distillation}{attention}{weighting}-f{round(100 * self.fraction)}"
                f"-s{self.seed}")  # fmt: skip

    @property
    def convert(self) -> str:
        return f"convert-{self.family}-s{self.seed}" + ("-attn" if self.mixer_init == "attention" else "")

    @property
    def label(self) -> str:
        if self.init == "scratch" and self.distillation == "none":
            return "scratch"
        paper = self.mixer_init == "standard" and self.weighting == "misaligned"
        if self.init == "subclone" and self.distillation == "wsab" and paper:
            return "TransMamba (subclone + WSAB)"
        what = {"none": "task loss only", "wsab": "WSAB", "feature": "feature KD", "logits": "logits KD",
                "wsab+logits": "WSAB + logits KD"}  # fmt: skip
        attention = ", attention init" if self.mixer_init == "attention" else ""
        weighting = f", {self.weighting} layer weights" if self.weighting != "misaligned" else ""
        return f"{self.init} + {what[self.distillation]}{attention}{weighting}"


RECIPES = {  # the recipes table's rows: Student fields besides family and seed
    "scratch": {"init": "scratch", "distillation": "none"},
    "wsab+logits": {"init": "subclone", "distillation": "wsab+logits"},
    "wsab": {"init": "subclone", "distillation": "wsab"},
    "logits": {"init": "subclone", "distillation": "logits"},
    "feature": {"init": "subclone", "distillation": "feature"},
    "wsab+logits-attn": {"init": "subclone", "distillation": "wsab+logits", "mixer_init": "attention"},
    "wsab-attn": {"init": "subclone", "distillation": "wsab", "mixer_init": "attention"},
    "scratch-logits": {"init": "scratch", "distillation": "logits"},
    "logits-half": {"init": "subclone", "distillation": "logits", "fraction": 0.5},  # Table 6: 50 % vs scratch 100 %
    "feature-half": {"init": "subclone", "distillation": "feature", "fraction": 0.5},  # the same for the default
    "wsab-uniform": {"init": "subclone", "distillation": "wsab", "weighting": "uniform"},  # WSAB's layer weights:
    "wsab-aligned": {"init": "subclone", "distillation": "wsab", "weighting": "aligned"},  # ablations of the paper's
}


def plan(
    table: str, seeds: list[int], recipes: list[str] | None = None, families: tuple = ("pmamba-s",)
) -> list[Student]:
    if table in ("table2", "figure3"):
        pmamba = [Student("pmamba-s", init, distill, seed=seed, curves=True)
                  for seed in seeds for init, distill in (("scratch", "none"), ("subclone", "wsab"))]  # fmt: skip
        vim = [Student("vim-s", init, distill, seed=seed) for seed in seeds
               for init, distill in (("scratch", "none"), ("subclone", "wsab"))]  # fmt: skip
        return pmamba if table == "figure3" else pmamba + vim
    if table == "table5":  # the three losses over every seed; the two ablations once
        losses = [Student("pmamba-s", "subclone", distill, seed=seed, curves=distill == "wsab")
                  for seed in seeds for distill in ("feature", "logits", "wsab")]  # fmt: skip
        return losses + [
            Student("pmamba-s", "subclone", "none"),
            Student("pmamba-s", "scratch", "wsab"),
            Student("pmamba-s", "scratch", "none", curves=True),
        ]
    if table == "table6":
        subsets = [Student("pmamba-s", "subclone", "wsab", fraction) for fraction in (0.25, 0.5, 0.75)]
        return subsets + [Student("pmamba-s", "subclone", "wsab", curves=True), Student("pmamba-s", "scratch", "none",
                                                                                         curves=True)]  # fmt: skip
    if table == "recipes":  # seed by seed, so a partial run has every recipe of its first seeds
        return [Student(family, seed=seed, **RECIPES[name])
                for seed in seeds for family in families for name in recipes or RECIPES]  # fmt: skip
    raise ValueError(f"unknown table {table!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("table", choices=["table2", "table5", "table6", "figure3", "recipes", "all"])
    add("--teacher", default=DEFAULT_TEACHER, help=f"ViT-family teacher folder or Hub id (default {DEFAULT_TEACHER}: "
        "the offline DINOv2-S/14 of `transmamba run`)")  # fmt: skip
    add("--student-layers", type=int, help="student depth: the teacher's first N layers (default: all)")
    add("--tag", default="", help="suffix of the output files (<table>-<tag>.json|md), e.g. the dataset")
    add("--dataset", default="fashion_mnist", help="image-classification data (default fashion_mnist)")
    add("--work-dir", type=Path, default=Path("paper-tables-work"), help="stage folders (default ./paper-tables-work)")
    add("--out-dir", type=Path, default=Path(__file__).parent / "experiments", help="where tables and plots go")
    add("--image-size", type=int, default=56, help="image side (default 56: a 4x4 grid of 14 px patches)")
    add("--train-size", type=int, default=4000, help="training images (default 4000)")
    add("--eval-size", type=int, default=1000, help="test images (default 1000)")
    add("--steps", type=int, default=100, help="steps of every student (default 100)")
    add("--batch-size", type=int, default=16, help="student batch size (default 16)")
    add("--learning-rate", type=float, default=5e-4, help="students' AdamW learning rate (default 5e-4, the paper's)")
    add("--teacher-steps", type=int, default=300, help="teacher fine-tuning steps, batch 32 (default 300)")
    add("--teacher-learning-rate", type=float, default=1e-4, help="teacher fine-tuning lr (default 1e-4)")
    add("--teacher-tune", choices=["all", "head"], default="all", help="teacher: fine-tune all or the head only")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of table 2 / figure 3 (default 0 1 2)")
    add("--eval-every", type=int, default=20, help="steps between test evaluations for the curves (default 20)")
    add("--curve-eval-size", type=int, default=250, help="test images of those evaluations (default 250; the "
        "final top-1 uses all --eval-size)")  # fmt: skip
    add("--recipes", nargs="+", choices=list(RECIPES), help="rows of the recipes table (default: all)")
    add("--families", nargs="+", choices=["pmamba-s", "vim-s"], default=["pmamba-s"], help="student families of "
        "the recipes table (default pmamba-s)")  # fmt: skip
    add("--threads", type=int, default=2, help="torch threads (default 2)")
    return parser


def run_args(args: argparse.Namespace, **overrides) -> RunArguments:
    """`transmamba run`'s typed options for the shared stages (seed 0 data and teacher) or one student's stages."""
    shared = RunArguments(
        teacher=args.teacher, dataset=args.dataset, work_dir=args.work_dir.absolute(), image_size=args.image_size,
        train_size=args.train_size, eval_size=args.eval_size, steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, teacher_steps=args.teacher_steps,
        teacher_learning_rate=args.teacher_learning_rate, teacher_tune=args.teacher_tune, save_steps=50,
    )  # fmt: skip
    return replace(shared, **overrides)


def train_students(args: argparse.Namespace, students: list[Student], on_result=None) -> tuple[dict, dict]:
    """Shared stages (data, teacher, cached teacher outputs), then one convert + one training stage per student."""
    shared = run_args(args)
    converts = sorted({(s.family, s.seed, s.mixer_init, s.convert) for s in students})  # scratch: its config
    names = ["data", "teacher", "teacher_outputs"] + [name for *_, name in converts]
    names += [s.name for s in students]
    stages = Stages(shared.work_dir, names)
    data = stages.run("data", "load, subset and preprocess the data once", {"args": _inputs(shared, "data")},
                      lambda d: pipeline.stage_data(d, shared, args.dataset))  # fmt: skip
    teacher = stages.run(
        "teacher",
        f"fine-tune {args.teacher} ({args.teacher_tune}) on the data for {args.teacher_steps} steps",
        {"data": stages.hashes["data"], "args": _inputs(shared, "teacher")},
        lambda d: _teacher_stage(d, replace(shared, batch_size=32), data, shared),  # batch 32
    )
    stages.run("teacher_outputs", "cache the frozen teacher's tokens and logits on the training images",
               {"teacher": stages.hashes["teacher"]}, lambda d: pipeline.stage_teacher_outputs(d, shared))  # fmt: skip

    def shared_now() -> dict:
        return {"data": data, "teacher": teacher, "seconds": dict(stages.seconds)}

    if on_result is not None:  # before any student: an earlier table of another budget or teacher stops the run here
        on_result(shared_now(), {})
    for family, seed, mixer_init, name in converts:
        # The preset's architecture at the teacher's width and depth (PMamba-S / ViM-S for DINOv2-S).
        depth = args.student_layers or teacher["num_hidden_layers"]
        shape = f"{family},hidden_size={teacher['hidden_size']},num_hidden_layers={depth}"
        one = run_args(args, student=shape, seed=seed, mixer_init=mixer_init)
        inputs = {"teacher": stages.hashes["teacher"], "family": family, "seed": seed}
        inputs.update({"layers": depth} if args.student_layers else {})  # earlier runs' hashes stay valid
        inputs.update({"mixer_init": mixer_init} if mixer_init != "standard" else {})
        stages.run(name, f"subclone the teacher into {family} (seed {seed}, {mixer_init} mixer init)", inputs,
                   lambda d, one=one: pipeline.stage_convert(d, one, teacher))  # fmt: skip
    results = {}
    for student in students:
        one = run_args(args, seed=student.seed, weighting=student.weighting)
        convert_dir = shared.work_dir / student.convert / pipeline.MODEL
        inputs = {"convert": stages.hashes[student.convert],
                  "outputs": stages.hashes["teacher_outputs"], "student": student.__dict__,
                  "budget": _inputs(one, "student"), "curves": [args.eval_every, args.curve_eval_size]}  # fmt: skip

        def work(directory: Path, student=student, one=one, convert_dir=convert_dir) -> tuple[dict, list[str]]:
            outputs, files = pipeline.stage_student(
                directory, one, student.distillation, student.init, convert_dir, student.fraction,
                args.eval_every if student.curves else 0, args.curve_eval_size,
            )  # fmt: skip
            pixels = pipeline.load_pixels(shared.work_dir)
            outputs["top1"] = pipeline.top1(TransMambaForImageClassification, directory / pipeline.MODEL, pixels)
            return outputs, files

        results[student] = stages.run(student.name, f"train {student.label} ({student.family})", inputs, work)
        if on_result is not None:
            on_result(shared_now(), results)
    return shared_now(), results


def _inputs(args: RunArguments, stage: str) -> dict:
    """The options a stage depends on (its hash): a changed budget retrains, a changed table does not."""
    keys = {
        "data": ("dataset", "train_size", "eval_size", "image_size", "teacher", "seed"),
        "teacher": ("teacher", "teacher_steps", "teacher_learning_rate", "teacher_tune", "seed"),
        "student": ("steps", "batch_size", "learning_rate", "alpha", "seed", "inherited_lr_scale"),
    }[stage]
    return {key: getattr(args, key) for key in keys}


def _teacher_stage(directory: Path, batch_args: RunArguments, data: dict, shared: RunArguments):
    outputs, files = pipeline.stage_teacher(directory, batch_args, data)
    pixels = pipeline.load_pixels(shared.work_dir)
    outputs["top1"] = pipeline.top1(AutoModelForImageClassification, directory / pipeline.MODEL, pixels)
    return outputs, files


# --- tables ------------------------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def _rows(results: dict[Student, dict], key) -> list[tuple[str, list[float]]]:
    groups: dict[str, list[float]] = {}
    for student, outputs in results.items():
        groups.setdefault(key(student), []).append(outputs["top1"])
    return list(groups.items())


def _row_name(table: str, student: Student) -> str:
    """Table 6 rows are data fractions; elsewhere a row on part of the data (``logits-half``) says so too."""
    if table == "table6":
        return f"{student.label}, {round(100 * student.fraction)} % of the data"
    part = f", {round(100 * student.fraction)} % of the data" if student.fraction < 1 else ""
    return f"{student.family}: {student.label}{part}"


def table_markdown(table: str, shared: dict, results: dict[Student, dict], args: argparse.Namespace) -> str:
    lines = [f"| student | top-1 % ({shared['data']['eval_size']} test images) | per seed |", "|---|---|---|"]
    lines += [f"| {name} | {_mean_std(values)} | {' / '.join(f'{100 * v:.1f}' for v in values)} |"
              for name, values in _rows(results, lambda student: _row_name(table, student))]  # fmt: skip
    teacher = shared["teacher"]
    lines.append(f"| teacher ({teacher['class']}, fine-tuned here) | {100 * teacher['top1']:.2f} | |")
    return "\n".join(lines)


def budget(args: argparse.Namespace, shared: dict) -> dict:
    return {
        "teacher": args.teacher,
        "teacher_tuning": f"{args.teacher_tune}, {args.teacher_steps} steps, batch 32, lr {args.teacher_learning_rate}",
        "data": f"{shared['data']['name']} ({shared['data']['source']}): {shared['data']['train_size']} train / "
        f"{shared['data']['eval_size']} test images at {args.image_size} px",
        "students": f"{args.student_layers or 'all'} layers, {args.steps} steps, batch {args.batch_size}, AdamW lr "
        f"{args.learning_rate}, cosine, alpha 0.5, teacher outputs cached",
        "seeds": args.seeds,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{describe_machine()} (shared), {torch.get_num_threads()} torch threads",
    }


CURVE_COLORS = {"scratch": "tab:gray", "TransMamba (subclone + WSAB)": "tab:red", "subclone + logits KD": "tab:blue",
                "subclone + feature KD": "tab:green"}  # fmt: skip


def figure3(results: dict[Student, dict], path: Path, eval_images: int, title: str) -> None:
    """Training cross-entropy (every student logs it) and, for students trained with curves, test top-1 over steps:
    one line per seed, one colour per row of ``CURVE_COLORS`` (PMamba-S on the full data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(s, out) for s, out in results.items()
             if s.family == "pmamba-s" and s.label in CURVE_COLORS and s.fraction == 1]  # fmt: skip
    if not shown:  # the write before the first student
        return
    with_accuracy = any(s.curves for s, _ in shown)
    figure, axes = plt.subplots(1, 1 + with_accuracy, figsize=(10 if with_accuracy else 7, 4.5), squeeze=False)
    loss_axis, seeds = axes[0, 0], Counter(student.label for student, _ in shown)
    for student, outputs in sorted(shown, key=lambda item: (item[0].label, item[0].seed)):
        history, color = outputs["history"], CURVE_COLORS[student.label]
        # One legend entry per row, its seeds' lines in one colour.
        label = f"{student.label} ({seeds.pop(student.label)} seeds)" if student.label in seeds else "_nolegend_"
        train = [(h["step"], h["task_loss"]) for h in history if "task_loss" in h]
        loss_axis.plot(*zip(*train, strict=True), color=color, alpha=0.8, label=label)
        evals = [(h["step"], 100 * h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
        if with_accuracy and evals:
            axes[0, 1].plot(*zip(*evals, strict=True), marker="o", color=color, alpha=0.8, label=label)
    loss_axis.set(xlabel="step", ylabel="training cross-entropy (task loss)", title="Loss")
    if with_accuracy:
        axes[0, 1].set(xlabel="step", ylabel=f"top-1 (%) on {eval_images} test images", title="Accuracy")
    for axis in axes[0]:
        axis.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


SAME_BUDGET = ("teacher_tuning", "data", "students")  # what must match for two runs' students to share a table


def _with_earlier_students(path: Path, record: dict, results: dict) -> tuple[dict, dict]:
    """Keep the students an earlier run wrote to ``path`` and this run did not train (other seeds or recipes, other
    processes), so a table grows across runs instead of being replaced; refuse to mix budgets or teachers."""
    if not path.exists():
        record["budget"]["since"] = record["budget"]["date"]
        return record, results
    earlier = json.loads(path.read_text())
    differs = [key for key in SAME_BUDGET if earlier["budget"].get(key) != record["budget"][key]]
    if earlier["teacher_top1"] != record["teacher_top1"]:
        differs.append(f"teacher top-1 {earlier['teacher_top1']} vs {record['teacher_top1']}")
    if differs:
        raise SystemExit(f"{path} holds students of another run ({', '.join(differs)} differ): pass another --tag "
                         "to write a separate table, or move that file away")  # fmt: skip
    fields = Student.__dataclass_fields__
    mine = {student.name for student in results}
    kept = [(student, s) for s in earlier["students"]  # a field newer than the file takes its default
            if (student := Student(**{k: s[k] for k in fields if k in s})).name not in mine]  # fmt: skip
    merged = {student: {"top1": s["top1"], "history": s["history"]} for student, s in kept}
    merged.update(results)
    since = earlier["budget"].get("since", earlier["budget"]["date"])  # the first run's; "date" is the last write's
    record["budget"] = {**record["budget"], "seeds": sorted({s.seed for s in merged}), "since": since}
    record["students"] = [{**s, **student.__dict__} for student, s in kept] + record["students"]  # every field
    record["students_done"] = f"{len(merged)} (this run: {record['students_done']})"
    return record, merged


def write_table(table: str, args: argparse.Namespace, shared: dict, results: dict, planned: int) -> None:
    """``<table>[-tag].json|md`` (and the figure): rewritten after every student, so a partial run leaves results."""
    name = f"{table}-{args.tag}" if args.tag else table
    record = {
        "table": table,
        "budget": budget(args, shared),
        "paper": PAPER.get(table),
        "teacher_top1": shared["teacher"]["top1"],
        "students_done": f"{len(results)} of {planned}",
        "students": [
            {**student.__dict__, "label": student.label, "top1": outputs["top1"],
             "seconds": shared["seconds"].get(student.name), "history": outputs["history"]}
            for student, outputs in results.items()
        ],
    }  # fmt: skip
    path = args.out_dir / f"{name}.json"
    done = len(results)  # by this run
    record, results = _with_earlier_students(path, record, results)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    title = f"PMamba-S on {shared['data']['name']}: scratch vs TransMamba ({shared['teacher']['class']} teacher)"
    if table == "figure3":
        if done == planned:
            figure3(results, args.out_dir / f"{name}.png", args.curve_eval_size, title)
        return
    if table == "recipes":  # Figure 3's loss panel at the recipes' budget, from the training logs every row keeps
        figure3(results, args.out_dir / f"{name}.png", args.curve_eval_size, title)
    partial = "" if done == planned else f" (partial: {done} of this run's {planned} students trained so far)"
    facts = record["budget"]
    header = "; ".join([facts["data"], facts["students"], f"teacher {facts['teacher_tuning']}", facts["machine"],
                        f"{facts['since']} to {facts['date']}"])  # fmt: skip
    markdown = table_markdown(table, shared, results, args)
    atomic_write_text(args.out_dir / f"{name}.md", f"{header}{partial}\n\n{markdown}\n\nPaper: {PAPER[table]}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    args.teacher = resolve_teacher(args.teacher)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tables = ["table2", "table5", "table6", "figure3"] if args.table == "all" else [args.table]
    for table in tables:
        students = plan(table, args.seeds, args.recipes, tuple(args.families))

        def progress(shared: dict, results: dict, table=table, planned=len(students)) -> None:  # noqa: B008
            write_table(table, args, shared, results, planned)

        shared, results = train_students(args, students, progress)
        write_table(table, args, shared, results, len(students))
        if table != "figure3":
            print(f"\n{table}:\n{table_markdown(table, shared, results, args)}\npaper: {PAPER[table]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
