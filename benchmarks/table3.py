"""The paper's Table 3 in small: a LLaVA teacher that can see, TransLlavaMamba students, exact-match answers.

    python benchmarks/table3.py --work-dir /tmp/table3 --dinov2 DINOV2_DIR          # every stage, resumable
    python benchmarks/table3.py --work-dir /tmp/table3 --align-from DIR             # align from a LLaVA folder
    python benchmarks/table3.py --work-dir /tmp/table3 --aligned-teacher DIR        # teacher already aligned

Stages (each resumable, under ``--work-dir``; a rerun does only what is missing):

1. ``compose``: DINOv2-S/14 + Gemma-3 270M + a fresh projector at ``--image-size`` px (56 px: 16 image tokens).
2. ``align``: LLaVA stage-1 alignment: the projector trains, plus LoRA adapters on the LM (``--lora-r``, 0: none;
   merged on save), vision tower frozen; answer-token CE on the training questions of `transmamba.vqa_eval`
   (Fashion-MNIST train images, the class question ``--class-repeats`` times per image). ``--align-from`` starts
   from an earlier aligned teacher (its steps are counted in the budget) instead of a freshly composed one.
3. ``eval-teacher``: exact match of the aligned teacher on the held-out questions (Fashion-MNIST test images).
4. per student: ``convert``/``init`` (the teacher's first ``--student-layers`` of 18 layers, or the same shape
   re-initialised for "scratch": every layer, norm and the projector fresh, the token embeddings Gemma's), ``train``
   (`train-vlm` on the same questions; token embeddings frozen in every run, ``--freeze_embeddings``), ``eval``.
5. ``speed`` (right after the distilled student): per-token greedy generation of teacher and distilled student at
   a ``--speed-prompt``-token prompt, in one process, decode steps of the two interleaved; with
   ``--speed-with-init`` before any student trains, on the distilled student's init (same architecture, so the
   same cost per token), for when CPU time may not last.

Results go to ``--out-dir`` as ``table3.json`` / ``table3.md`` after every stage, so a killed run leaves what it
measured. Not measured here: GQA, VQAv2, VizWiz, ScienceQA (no such data offline); the held-out questions are our
stand-in (README).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainingArguments
from transformers.generation.streamers import BaseStreamer
from transmamba.conversion.compose_gemma_llava import compose, packaged_gemma_gguf
from transmamba.conversion.llava import subclone_llava
from transmamba.model_cards.results import describe_machine
from transmamba.model_cards.vlm import build_vlm_card
from transmamba.modeling_transmamba import TransLlavaMambaForConditionalGeneration
from transmamba.trainers.align_projector import AlignArguments
from transmamba.trainers.align_projector import run as align
from transmamba.trainers.args import VlmDistillationArguments
from transmamba.trainers.checkpoints import newest_complete
from transmamba.trainers.train_vlm import train_vlm

from transmamba.image_text import LlavaConversationEncoder
from transmamba.stages import Stages
from transmamba.vqa_answer import evaluate_answers
from transmamba.vqa_eval import SOURCES, vqa_splits

PAPER = "Trans-LLaVA 0.6B (paper, Table 3): GQA 50.2, VQAv2 49.7, VizWiz 34.8, ScienceQA 62.9"


@dataclass(frozen=True)
class StudentRecipe:
    """How one Table 3 row's student starts and trains; ``extras`` are the `train-vlm` options it sets beyond
    alpha and the feature weight (part of its stage's inputs only when set, so earlier stages stay valid)."""

    init: str  # "subclone" or "scratch"
    alpha: float
    feature_weight: float
    cross: bool  # Cross-Mamba layers at 1/3 and 2/3 of the depth
    extras: tuple[tuple[str, object], ...] = ()


T1, T2 = ("temperature", 1.0), ("temperature", 2.0)  # explicit in every distilled row: stage inputs name it
STUDENTS = {
    "distilled": StudentRecipe("subclone", 0.5, 1.0, True, (T1,)),  # train-vlm's defaults
    "ce-subclone": StudentRecipe("subclone", 1.0, 0.0, True),
    "ce-scratch": StudentRecipe("scratch", 1.0, 0.0, True),
    "distilled-no-cross": StudentRecipe("subclone", 0.5, 1.0, False, (T1,)),
    "distilled-t2": StudentRecipe("subclone", 0.5, 1.0, True, (T2,)),
    "distilled-no-cross-t2": StudentRecipe("subclone", 0.5, 1.0, False, (T2,)),
    "distilled-logits": StudentRecipe("subclone", 0.5, 0.0, True, (T2,)),
    "distilled-inherited": StudentRecipe("subclone", 0.5, 1.0, True, (T2, ("feature_layers", "inherited"))),
}


def training_args(folder: Path, steps: int, batch: int, lr: float, seed: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder), use_cpu=True, report_to="none", disable_tqdm=True, max_steps=steps,
        per_device_train_batch_size=batch, learning_rate=lr, warmup_steps=max(1, steps // 20),
        lr_scheduler_type="cosine", logging_steps=10, save_strategy="steps", save_steps=max(1, steps // 4),
        save_total_limit=1, eval_strategy="no", per_device_eval_batch_size=4, seed=seed,
        dataloader_num_workers=0,
    )  # fmt: skip


def resume_point(folder: Path) -> str | None:
    """The newest complete checkpoint (one cut off by a kill or a full disk is skipped, with a warning)."""
    newest = newest_complete(folder)
    return str(newest) if newest else None


def evaluate(model_dir: Path, teacher_dir: Path, rows, max_new_tokens: int) -> dict:
    """Exact match of a saved model folder on ``rows``, prompts built with the teacher's processor."""
    encoder = LlavaConversationEncoder(AutoProcessor.from_pretrained(teacher_dir))
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=True)
    return evaluate_answers(model, encoder, rows, max_new_tokens)


def trained_steps(folder: Path) -> int | None:
    """The global step of a Trainer output folder's newest checkpoint (None without one)."""
    checkpoint = resume_point(folder)
    return json.loads(Path(checkpoint, "trainer_state.json").read_text())["global_step"] if checkpoint else None


def scratch_student(subcloned: Path, output: Path) -> None:
    """The subclone's shape with every language-model layer, norm and the projector re-initialised; the vision
    tower and token embeddings kept (both frozen in every run, so a fresh copy could never learn)."""
    student = TransLlavaMambaForConditionalGeneration.from_pretrained(subcloned, dtype=torch.float32)
    fresh = TransLlavaMambaForConditionalGeneration(student.config)
    fresh.model.vision_tower.load_state_dict(student.model.vision_tower.state_dict())
    fresh.get_input_embeddings().load_state_dict(student.get_input_embeddings().state_dict())
    fresh.save_pretrained(output)
    AutoProcessor.from_pretrained(subcloned).save_pretrained(output)


class StepTimer(BaseStreamer):
    """Timestamps of the new tokens ``generate`` streams (the first ``put`` is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self.calls = 0

    def put(self, value):
        self.calls += 1
        if self.calls > 1:
            self.times.append(time.perf_counter())

    def end(self):
        pass


@torch.no_grad()
def per_token_seconds(model, prompt: int, new_tokens: int, vocab: int) -> float:
    low, high = min(1000, vocab // 2), min(vocab, 50000)  # ordinary text tokens, no special ones
    ids = torch.randint(low, high, (1, prompt), generator=torch.Generator().manual_seed(0))
    timer = StepTimer()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, streamer=timer)  # fmt: skip
    return statistics.median(b - a for a, b in zip(timer.times, timer.times[1:], strict=False))


def write_examples(out_dir: Path, rows, results: dict, teacher_row: str, count: int = 5) -> None:
    """Five held-out examples (image, question, teacher's and distilled student's answers) as markdown + PNGs;
    image i is asked question kind i mod 4, so every kind shows up."""
    answers = {name: row["eval"]["predictions"] for name, row in results["rows"].items()
               if len(row.get("eval", {}).get("predictions", [])) == len(rows)}  # fmt: skip
    teacher, student = answers.get(teacher_row), answers.get("distilled-seed0")
    if teacher is None:
        return
    folder = out_dir / "table3_examples"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["| image | question | answer | teacher | distilled student |", "|---|---|---|---|---|"]
    for image in range(min(count, len(rows) // 4)):
        i = 4 * image + image % 4
        row = rows[i]
        row["image"].convert("L").resize((84, 84), resample=0).save(folder / f"{image}.png")
        said = student[i] if student else "(not trained yet)"
        lines.append(f"| ![](table3_examples/{image}.png) | {row['question']} | {row['answer']} | "
                     f"{teacher[i].strip()!r} | {said.strip()!r} |")  # fmt: skip
    (out_dir / "table3_examples.md").write_text("\n".join(lines) + "\n")


def write_outputs(out_dir: Path, results: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table3.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Table 3 in small: exact match on the held-out questions (our GQA/VQA stand-in)", "",
        f"{results['machine']}; started {results['started']}, updated {results['updated']}.", "",
        f"Held-out: {results['questions']}. Chance (majority answer per kind): {results.get('chance', '?')}.", "",
        "| model | exact match | class | yes/no | attribute yes/no | attribute | budget | train s | eval s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, row in results["rows"].items():
        ev = row.get("eval", {})
        cells = [f"{100 * ev[k]:.1f}" if k in ev else "-" for k in
                 ("exact_match", "exact_match/class", "exact_match/yes_no", "exact_match/attribute_yes_no",
                  "exact_match/attribute")]  # fmt: skip
        lines.append(f"| {name} | {' | '.join(cells)} | {row.get('budget', '-')} | {row.get('train_seconds', '-')} "
                     f"| {ev.get('seconds', '-')} |")  # fmt: skip
    if "speed" in results:
        speed = results["speed"]
        lines += ["", f"Greedy generation after a {speed['prompt']}-token prompt, median per new token, interleaved "
                  f"in one process: teacher {1000 * speed['teacher_s_per_token']:.1f} ms, "
                  f"{'untrained init of the ' if 'init-' in speed.get('student', '') else ''}distilled student "
                  f"{1000 * speed['student_s_per_token']:.1f} ms ({speed['speedup']:.2f}x)."]  # fmt: skip
    lines += ["", PAPER, ""]
    (out_dir / "table3.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/experiments"))
    parser.add_argument("--dinov2", type=Path, help="DINOv2 folder (offline_dinov2_teacher.py) for `compose`.")
    parser.add_argument("--aligned-teacher", type=Path, help="use this aligned teacher; skips compose and align.")
    parser.add_argument("--align-from", type=Path, help="align this LLaVA folder (e.g. an earlier, projector-only "
                        "aligned teacher) instead of a freshly composed one; skips compose.")  # fmt: skip
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank on the teacher's LM while aligning (0: none)")
    parser.add_argument("--class-repeats", type=int, default=2, help="class questions per training image")
    parser.add_argument("--align-lr", type=float, default=1e-3)
    parser.add_argument("--student-lr", type=float, default=1e-3)
    parser.add_argument("--inherited-lr-scale", type=float, default=0.1,
                        help="learning-rate multiplier of the subcloned tensors (train-vlm's)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--source", default="default", choices=SOURCES, help="question images (Fashion-MNIST).")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=25)
    parser.add_argument("--align-steps", type=int, default=200)
    parser.add_argument("--student-steps", type=int, default=100)
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--students", default=",".join(STUDENTS), help="comma-separated subset of " + ",".join(STUDENTS)
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--speed-prompt", type=int, default=2048)
    parser.add_argument("--speed-with-init", action="store_true", help="time generation with the distilled "
                        "student's untrained init (same architecture) before the students train")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=6, help="the longest answer + end of turn")
    args = parser.parse_args(argv)
    if (args.aligned_teacher, args.align_from, args.dinov2).count(None) != 2:
        parser.error("give one of --dinov2 (compose and align a teacher), --align-from or --aligned-teacher")
    students = [s for s in args.students.split(",") if s]
    unknown = sorted(set(students) - set(STUDENTS))
    if unknown:
        parser.error(f"unknown students {unknown}; choose from {', '.join(STUDENTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    out_json = args.out_dir / "table3.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": {}}  # fmt: skip
    results["machine"] = f"{describe_machine()}, shared, 1 thread"
    splits = vqa_splits(args.source, args.train_images, args.eval_images, class_repeats=args.class_repeats)
    results["questions"] = (
        f"{len(splits['test'])} questions on the first {args.eval_images} test images ({args.source}); training: "
        f"{len(splits['train'])} questions on {args.train_images} train images (the class question "
        f"{args.class_repeats}x per image)"
    )
    adapters = f"projector + LoRA r={args.lora_r} on the LM" if args.lora_r else "projector only"
    teacher_row = f"teacher ({adapters})"
    # Students of one init and Cross-Mamba setting share one init stage (the first one's): the same starting weights.
    first = {}
    for s in students:
        first.setdefault((STUDENTS[s].init, STUDENTS[s].cross), s)
    init_of = {s: first[STUDENTS[s].init, STUDENTS[s].cross] for s in students}
    names = ["compose", "align", "eval-teacher"] + [
        f"{kind}-{s}-seed{seed}" for s in students for seed in seeds for kind in ("init", "train", "eval")
        if kind != "init" or init_of[s] == s
    ]  # fmt: skip
    names.insert(names.index("eval-distilled-seed0") + 1 if "eval-distilled-seed0" in names else len(names), "speed")
    stages = Stages(args.work_dir, names)

    def save():
        results["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_outputs(args.out_dir, results)

    if args.aligned_teacher is not None:
        teacher = args.aligned_teacher
        results["rows"].setdefault(teacher_row, {})["budget"] = (
            f"{trained_steps(teacher) or '?'} steps x batch {args.batch}, {adapters}"
        )
    else:
        base = args.align_from
        if base is None:

            def do_compose(folder: Path):
                model = compose(args.dinov2, packaged_gemma_gguf(), folder / "model", image_size=args.image_size)
                return model, ["model"]

            stages.run("compose", "DINOv2-S/14 + Gemma-3 270M + fresh projector", {"size": args.image_size},
                       do_compose)  # fmt: skip
            base = args.work_dir / "compose" / "model"
        earlier = trained_steps(base)  # an already aligned starting point: its steps are part of the budget

        def do_align(folder: Path):
            targs = training_args(folder / "model", args.align_steps, args.batch, args.align_lr, 0)
            targs.resume_from_checkpoint = resume_point(folder / "model")
            started = time.perf_counter()
            trainer = align(AlignArguments(teacher=str(base), source=args.source, max_train_images=args.train_images,
                                           class_repeats=args.class_repeats, lora_r=args.lora_r,
                                           lora_alpha=2 * max(1, args.lora_r)), targs)  # fmt: skip
            losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
            return {"seconds": round(time.perf_counter() - started), "first_loss": losses[:1],
                    "last_loss": losses[-1:]}, ["model/model.safetensors"]  # fmt: skip

        inputs = {"steps": args.align_steps, "from": str(base), "lora": args.lora_r, "classes": args.class_repeats,
                  "lr": args.align_lr}  # fmt: skip
        out = stages.run("align", f"train the {adapters}", inputs, do_align)
        teacher = args.work_dir / "align" / "model"
        before = f"{earlier} projector-only steps (earlier run) + " if earlier else ""
        results["rows"].setdefault(teacher_row, {}).update(
            budget=f"{before}{args.align_steps} steps x batch {args.batch}, {adapters}, lr {args.align_lr}",
            train_seconds=out["seconds"],
        )
    save()

    def do_eval_teacher(folder: Path):
        return evaluate(teacher, teacher, splits["test"], args.max_new_tokens), []

    ev = stages.run(
        "eval-teacher",
        "exact match of the teacher",
        {"teacher": str(teacher), "questions": len(splits["test"])},
        do_eval_teacher,
    )
    results["rows"][teacher_row]["eval"] = ev
    results["chance"] = round(100 * ev["chance"], 1)
    save()
    write_examples(args.out_dir, splits["test"], results, teacher_row)

    distilled = args.work_dir / "train-distilled-seed0" / "model"
    layers = args.student_layers

    def card_and_speed(student: Path = distilled):
        """The distilled student's card (with its measured exact match) and the generation speed stage
        (``student``: the distilled student, or its untrained init of the same architecture)."""
        if "eval" in results["rows"].get("distilled-seed0", {}):  # the card states the measured exact match
            config = json.loads((teacher / "config.json").read_text())
            facts = {"teacher_layers": config["text_config"]["num_hidden_layers"], "student_layers": layers,
                     "machine": results["machine"], "repo": "transllava-mamba-distilled",
                     "gemma": config["text_config"]["model_type"].startswith("gemma")}  # fmt: skip
            card = build_vlm_card(results["rows"], "distilled-seed0", str(teacher), facts)
            card.save(distilled / "README.md")  # replaces the trainer's placeholder stub
            card.save(args.out_dir / "table3_card.md")
        if student.is_dir():

            def do_speed(folder: Path):
                models = {"teacher": AutoModelForImageTextToText.from_pretrained(teacher, dtype=torch.float32),
                          "student": AutoModelForImageTextToText.from_pretrained(student, dtype=torch.float32,
                                                                                  trust_remote_code=True)}  # fmt: skip
                vocab = models["teacher"].config.text_config.vocab_size
                times = {k: [] for k in models}
                for _ in range(2):  # interleaved: both see the same load
                    for key, model in models.items():
                        times[key].append(per_token_seconds(model.eval(), args.speed_prompt, 8, vocab))
                best = {k: min(v) for k, v in times.items()}
                return {
                    "prompt": args.speed_prompt,
                    "student": str(student),
                    "teacher_s_per_token": best["teacher"],
                    "student_s_per_token": best["student"],
                    "speedup": best["teacher"] / best["student"],
                }, []

            inputs = {"prompt": args.speed_prompt, "student": str(student)}
            results["speed"] = stages.run("speed", "per-token generation", inputs, do_speed)
            save()

    timed = args.work_dir / "init-distilled-seed0" / "model" if args.speed_with_init else distilled
    if args.speed_with_init:  # speed depends on the architecture only: measure it before any student trains
        card_and_speed(timed)
    data = DatasetDict({"train": splits["train"], "test": splits["test"].select(range(8))})
    for name in students:
        recipe = STUDENTS[name]
        init, alpha, feature_weight, cross, extras = (recipe.init, recipe.alpha, recipe.feature_weight, recipe.cross,
                                                      dict(recipe.extras))  # fmt: skip
        for seed in seeds:
            tag = f"{name}-seed{seed}"
            cross_layers = [layers // 3, 2 * layers // 3] if cross else []

            def do_init(folder: Path, init=init, cross_layers=cross_layers, seed=seed):
                torch.manual_seed(seed)  # the new mixers' random init: the same in every process
                subclone_llava(teacher, num_layers=layers, cross_mamba_layers=cross_layers,
                               output_dir=folder / "subclone")  # fmt: skip
                if init == "scratch":
                    scratch_student(folder / "subclone", folder / "model")
                    return {}, ["model"]
                (folder / "subclone").rename(folder / "model")
                return {}, ["model"]

            init_tag = f"{init_of[name]}-seed{seed}"
            stages.run(
                f"init-{init_tag}",
                f"{init} student, {layers} layers, cross {cross_layers}",
                {"teacher": str(teacher), "init": init, "layers": layers, "cross": cross_layers},
                do_init,
            )

            def do_train(folder: Path, init_tag=init_tag, alpha=alpha, feature_weight=feature_weight, seed=seed,
                         extras=extras):  # fmt: skip
                targs = training_args(folder / "model", args.student_steps, args.batch, args.student_lr, seed)
                targs.resume_from_checkpoint = resume_point(folder / "model")
                vlm = VlmDistillationArguments(teacher=str(teacher), student=str(args.work_dir / f"init-{init_tag}" /
                                               "model"), alpha=alpha, feature_weight=feature_weight,
                                               freeze_embeddings=True, inherited_lr_scale=args.inherited_lr_scale,
                                               **extras)  # fmt: skip
                started = time.perf_counter()
                train_vlm(vlm, targs, data)
                for checkpoint in (folder / "model").glob("checkpoint-*"):  # this run's own, only for resuming
                    shutil.rmtree(checkpoint)  # (1.2 GB each: a full disk killed two runs)
                return {"seconds": round(time.perf_counter() - started)}, ["model/model.safetensors"]

            out = stages.run(
                f"train-{tag}",
                f"train-vlm alpha={alpha} feature_weight={feature_weight}",
                {
                    "steps": args.student_steps,
                    "alpha": alpha,
                    "fw": feature_weight,
                    "lr": args.student_lr,
                    "teacher": str(teacher),
                    "frozen_embeddings": True,
                    "inherited_lr_scale": args.inherited_lr_scale,
                    **extras,
                },
                do_train,
            )
            row = results["rows"].setdefault(tag, {})
            row.update(
                budget=f"{args.student_steps} steps x batch {args.batch}, lr {args.student_lr}, alpha {alpha}, "
                f"features {feature_weight}, {layers} layers, cross-Mamba {cross_layers}, embeddings frozen"
                + "".join(f", {key} {value}" for key, value in extras.items())
                + (f", subcloned tensors at {args.inherited_lr_scale}x the rate" if init == "subclone" else ""),
                train_seconds=out["seconds"],
            )
            save()
            student_dir = args.work_dir / f"train-{tag}" / "model"
            row["eval"] = stages.run(
                f"eval-{tag}",
                "exact match",
                {"student": str(student_dir), "questions": len(splits["test"])},
                lambda folder, d=student_dir: (evaluate(d, teacher, splits["test"], args.max_new_tokens), []),
            )
            save()
            if tag == "distilled-seed0":
                write_examples(args.out_dir, splits["test"], results, teacher_row)
                card_and_speed(timed)

    return 0


if __name__ == "__main__":
    sys.exit(main())
