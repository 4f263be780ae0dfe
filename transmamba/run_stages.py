"""The stages of `transmamba run`. Each takes its folder and the typed `RunArguments` and returns ``(outputs,
files)``: JSON outputs that `Stages` stores in the stage's marker, and the files that must still exist for a rerun
to skip it (see `transmamba.stages`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from .data import (
    FASHION_MNIST_DIR,
    check_classes,
    clean_labels,
    dataset_names,
    load_image_dataset,
    processor_for_size,
)
from .model_cards.naming import family_of, hub_id, public_name
from .pretrained_teacher import SOURCE, is_offline_dinov2
from .run_args import RunArguments
from .run_training import PIXELS, TensorColumns, device, train_stage, training_args
from .trainers.checkpoints import LibraryLoadingTrainer

OUTPUTS_FILE = "teacher_outputs.safetensors"
DEFAULT_STUDENT_LAYERS = 6  # the default student takes the teacher's first 6 layers
MODEL = "model"
HISTORY_KEYS = ("step", "loss", "task_loss", "distill_loss", "eval_accuracy")  # a student stage's training log
HISTORY_PREFIXES = ("distill_loss/", "layer_weight")  # per direction, and where WSAB put its weight


def default_dataset() -> str:
    """Fashion-MNIST when its Debian package is installed (no network), else the embedded digits."""
    return "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits"


def load_pixels(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(work_dir / "data" / PIXELS)


def stage_data(directory: Path, args: RunArguments, dataset: str) -> tuple[dict, list[str]]:
    """Subset the dataset (fixed seed), preprocess once with the teacher's processor, store tensors."""
    data = load_image_dataset(dataset)
    names = data["train"].features["label"].names
    check_classes(names, f"Dataset {dataset!r}")
    data = clean_labels(data, "label", len(names), f"Dataset {dataset!r}")
    train = data["train"].shuffle(seed=args.seed).select(range(min(args.train_size, len(data["train"]))))
    test = data["test"].shuffle(seed=args.seed).select(range(min(args.eval_size, len(data["test"]))))
    tqdm.write(f"  using {len(train)} training / {len(test)} test images of {len(data['train'])} / {len(data['test'])}")
    processor = _processor(args)
    tensors = {}
    for split, rows in (("train", train), ("eval", test)):
        pixels = []
        for start in tqdm(range(0, len(rows), 512), desc=f"  preprocess {split}", leave=False):
            batch = rows[start : start + 512]
            images = [image.convert("RGB") for image in batch["image"]]
            pixels.append(processor(images=images, return_tensors="pt")["pixel_values"])
        tensors[f"{split}_pixels"] = torch.cat(pixels).contiguous()
        tensors[f"{split}_labels"] = torch.tensor(rows["label"], dtype=torch.long)
    save_file(tensors, directory / PIXELS)
    processor.save_pretrained(directory)
    name, hub, source = dataset_names(dataset, args.dataset_name)
    outputs = {
        "name": name,
        "hub_id": hub,
        "source": source,
        "train_split": "train",
        "eval_split": "test",
        "train_size": len(train),
        "eval_size": len(test),
        "num_labels": len(names),
        "labels": names,
        "image_size": int(tensors["train_pixels"].shape[-1]),
    }
    return outputs, [PIXELS, "preprocessor_config.json"]


def _processor(args: RunArguments):
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


def _given_teacher(args: RunArguments, id2label: dict, label2id: dict):
    """The --teacher with a head for the data's classes; (model, training steps, its Hub id)."""
    from .conversion.teachers import load_teacher_config
    from .model_checks import check_weights

    config = load_teacher_config(args.teacher)
    check_weights(args.teacher, "--teacher")
    heads = any("ImageClassification" in a for a in config.architectures or [])
    fits = heads and config.num_labels == len(id2label)
    model = AutoModelForImageClassification.from_pretrained(
        args.teacher, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=not fits
    )
    steps = 0 if fits else args.teacher_steps
    return model, steps, hub_id(args.teacher, args.base_model)


def stage_teacher(directory: Path, args: RunArguments, data: dict) -> tuple[dict, list[str]]:
    """Our small ViT trained on the data, or the given teacher with a head for the data's classes."""
    pixels = load_pixels(args.work_dir)
    id2label = dict(enumerate(data["labels"]))
    label2id = {name: i for i, name in id2label.items()}
    base_model = None
    # torch seeds each process differently: an unseeded new head (a pretrained teacher's) would differ run to run.
    torch.manual_seed(args.seed)
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
        model, steps = ViTForImageClassification(config), args.teacher_steps
    else:
        model, steps, base_model = _given_teacher(args, id2label, label2id)
    pretrained = args.teacher is not None
    head_steps = min(args.teacher_head_steps, steps) if pretrained and args.teacher_tune == "all" else 0
    tune = args.teacher_tune if pretrained else "all"
    train = TensorColumns(pixel_values=pixels["train_pixels"], labels=pixels["train_labels"])
    for phase, phase_steps in (("head", head_steps), (tune, steps - head_steps)):  # optionally the new head first
        if phase_steps:
            model.base_model.requires_grad_(phase == "all")
            arguments = training_args(directory / phase, args, phase_steps, args.teacher_lr(pretrained))
            arguments.warmup_steps = max(1, round(args.teacher_warmup(pretrained) * phase_steps))
            # resumes through from_pretrained: transformers' key renames apply
            train_stage(LibraryLoadingTrainer(model=model, args=arguments, train_dataset=train), directory / phase)
    tuning = {"learning_rate": args.teacher_lr(pretrained), "warmup_ratio": args.teacher_warmup(pretrained),
              "head_steps": head_steps, "batch_size": args.batch_size}  # fmt: skip
    model.save_pretrained(directory / MODEL)
    transformers.AutoImageProcessor.from_pretrained(args.work_dir / "data").save_pretrained(directory / MODEL)
    for phase in ("head", "all"):
        shutil.rmtree(directory / phase, ignore_errors=True)
    if args.teacher is None:
        source = "trained by transmamba run"
    else:
        source = SOURCE if is_offline_dinov2(args.teacher) else public_name(args.teacher, base_model)
    outputs = {
        "source": source,
        "base_model": base_model,
        "class": type(model).__name__,
        "trained_here": args.teacher is None,
        "steps": steps,
        "tuned": tune if steps else None,
        "tuning": tuning if steps else None,
        "hidden_size": model.config.hidden_size,
        "num_hidden_layers": model.config.num_hidden_layers,
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


def student_spec(args: RunArguments, teacher: dict) -> str:
    if args.student:
        return args.student
    layers = min(teacher["num_hidden_layers"], DEFAULT_STUDENT_LAYERS)
    return f"pmamba-t,hidden_size={teacher['hidden_size']},num_hidden_layers={layers}"


def stage_convert(directory: Path, args: RunArguments, teacher: dict) -> tuple[dict, list[str]]:
    """Stage 1 through the same `convert` call as `transmamba convert`, so the run's student is what it makes."""
    from .conversion.args import ConvertArguments
    from .conversion.convert import convert

    spec = student_spec(args, teacher)
    result = convert(
        ConvertArguments(teacher=str(args.work_dir / "teacher" / MODEL), student=spec, output=directory / MODEL,
                         seed=args.seed, base_model=teacher["base_model"], overwrite=True,
                         mixer_init=args.mixer_init)
    )  # fmt: skip
    config = result.config
    outputs = {
        "spec": spec,
        "family": family_of(config),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_directions": config.num_directions,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "mixer_init": args.mixer_init,
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


@torch.inference_mode()
def stage_teacher_outputs(directory: Path, args: RunArguments) -> tuple[dict, list[str]]:
    """The frozen teacher on every (deterministic) training image, once: distillation epochs reuse these."""
    from .trainers.wrapper import capture_last_hidden_state

    teacher = AutoModelForImageClassification.from_pretrained(args.work_dir / "teacher" / MODEL).eval().to(device())
    pixels = load_pixels(args.work_dir)["train_pixels"]
    tokens, logits = [], []
    for start in tqdm(range(0, len(pixels), 256), desc="  teacher forward", leave=False):
        with capture_last_hidden_state(teacher.base_model) as box:
            out = teacher(pixel_values=pixels[start : start + 256].to(device()))
        tokens.append(box["last"].float().cpu())
        logits.append(out.logits.float().cpu())
    save_file({"teacher_tokens": torch.cat(tokens), "teacher_logits": torch.cat(logits)}, directory / OUTPUTS_FILE)
    return {"images": len(pixels), "tokens": int(tokens[0].shape[1])}, [OUTPUTS_FILE]


def stage_student(
    directory: Path,
    args: RunArguments,
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
    (on the first ``eval_images`` test images, default all). The teacher is never loaded: the batches carry its
    cached outputs, and the distiller only needs its width.
    """
    from .conversion.export import inherited_parameters
    from .trainers.build import build_trainer
    from .trainers.inputs import accuracy

    init = init or ("scratch" if distillation == "none" else "subclone")
    converted = convert_dir or args.work_dir / "convert" / MODEL
    pixels = load_pixels(args.work_dir)
    keep = max(1, round(train_fraction * len(pixels["train_labels"])))
    columns = {"pixel_values": pixels["train_pixels"][:keep], "labels": pixels["train_labels"][:keep]}
    teacher_dim = 0
    if distillation != "none":
        cached = load_file(args.work_dir / "teacher_outputs" / OUTPUTS_FILE)
        columns.update({name: tensor[:keep] for name, tensor in cached.items()})
        teacher_dim = AutoConfig.from_pretrained(args.work_dir / "teacher" / MODEL).hidden_size
    torch.manual_seed(args.seed)
    if init == "scratch":
        student = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(converted))
    else:
        student = AutoModelForImageClassification.from_pretrained(converted)
    arguments = training_args(directory, args, args.steps, args.learning_rate)
    evaluation = {}
    if eval_every:
        arguments.eval_strategy, arguments.eval_steps = "steps", eval_every
        arguments.per_device_eval_batch_size = 256
        evaluation = {
            "eval_dataset": TensorColumns(
                pixel_values=pixels["eval_pixels"][:eval_images], labels=pixels["eval_labels"][:eval_images]
            ),
            "compute_metrics": accuracy,
        }
    trainer = build_trainer(
        student,
        distillation,
        arguments,
        TensorColumns(**columns),
        alpha=args.alpha,
        teacher_dim=teacher_dim,
        distiller_options=args.distiller_options(),
        inherited=inherited_parameters(converted) if init == "subclone" else (),
        inherited_lr_scale=args.inherited_lr_scale,
        processing_class=transformers.AutoImageProcessor.from_pretrained(args.work_dir / "data"),
        **evaluation,
    )
    loss = train_stage(trainer, directory)
    trainer.save_model(str(directory / MODEL))
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    history = [
        {k: v for k, v in entry.items() if k in HISTORY_KEYS or k.startswith(HISTORY_PREFIXES)}
        for entry in trainer.state.log_history
    ]
    outputs = {
        "final_train_loss": loss,
        "parameters": student.num_parameters(),
        "class": type(student).__name__,
        "init": init,
        "distillation": distillation,
        "inherited_lr_scale": args.inherited_lr_scale if init == "subclone" else None,
        "train_images": keep,
        "history": [entry for entry in history if len(entry) > 1],
    }
    return outputs, [f"{MODEL}/config.json", f"{MODEL}/model.safetensors"]


@torch.inference_mode()
def top1(model_class, folder: Path, pixels: dict[str, torch.Tensor]) -> float:
    """Top-1 of the model saved in ``folder`` on the stored evaluation images."""
    model = model_class.from_pretrained(folder).eval().to(device())
    images, labels = pixels["eval_pixels"], pixels["eval_labels"]
    correct = 0
    for start in tqdm(range(0, len(images), 256), desc=f"  evaluate {folder.parent.name}", leave=False):
        logits = model(pixel_values=images[start : start + 256].to(device())).logits
        correct += (logits.argmax(-1).cpu() == labels[start : start + 256]).sum().item()
    return round(correct / len(labels), 4)


def stage_gate(directory: Path, args: RunArguments) -> tuple[dict, list[str]]:
    """Top-1 of the teacher and the scratch student on the held-out images, before any distillation."""
    pixels = load_pixels(args.work_dir)
    roles = ("teacher", "scratch")
    return {role: top1(AutoModelForImageClassification, args.work_dir / role / MODEL, pixels) for role in roles}, []


def stage_evaluate(directory: Path, args: RunArguments, known: dict | None = None) -> tuple[dict, list[str]]:
    """Top-1 of the saved models on the held-out images, each loaded back from its folder (``known``: accuracies
    already measured on the same images, e.g. by the gate)."""
    pixels = load_pixels(args.work_dir)
    known = known or {}
    accuracy = {role: known[role] if role in known else top1(AutoModelForImageClassification,
                                                              args.work_dir / role / MODEL, pixels)
                for role in ("teacher", "scratch", "transmamba")}  # fmt: skip
    return {"accuracy": accuracy}, []
