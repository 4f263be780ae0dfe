"""`transmamba train-vlm`: distil a TransLlavaMamba student from its LLaVA teacher on image-text conversations.

Loss: alpha * CE on the answer tokens + (1 - alpha) * (logits KD on the answer tokens + feature_weight *
layer-wise feature loss), see `transmamba.trainers.llava_distill`. Runs as ``transmamba train-vlm ...`` and as
``accelerate launch -m transmamba.trainers.train_vlm ...``. ``--help`` lists our options (quickly: no torch)
and ``--help-training`` every ``TrainingArguments`` option too. The library call is
``train_vlm(VlmDistillationArguments, TrainingArguments) -> TrainResult``; a killed run resumes from its
newest complete checkpoint.
"""

from __future__ import annotations

import logging
import sys

from transmamba.cli_support import training_command_main, training_parser

from .args import TrainResult, VlmDistillationArguments

logger = logging.getLogger("transmamba.train_vlm")


PROG = "transmamba train-vlm"
TRAINING_DEFAULTS = {"output_dir": "transllava-mamba-student", "eval_strategy": "epoch", "report_to": "none"}


def build_parser():
    """The full parser (our options + `TrainingArguments`; imports torch)."""
    return training_parser(VlmDistillationArguments, PROG, __doc__.splitlines()[0], **TRAINING_DEFAULTS)


def load_configs(args: VlmDistillationArguments):
    """Student and teacher configs, refused before any weight is loaded when they cannot be a pair."""
    from transmamba.modeling_transmamba import TransLlavaMambaConfig

    from transmamba.model_checks import check_weights, load_config

    student = load_config(args.student, "--student")
    check_weights(args.student, "--student")
    if not isinstance(student, TransLlavaMambaConfig):
        raise ValueError(
            f"--student {args.student!r} is a {student.model_type!r} model, not a TransLlavaMamba; subclone the LLaVA "
            "teacher first (transmamba.conversion.llava.subclone_llava) and pass its output folder."
        )
    teacher = load_config(args.teacher, "--teacher")
    check_weights(args.teacher, "--teacher")
    if getattr(teacher, "text_config", None) is None or getattr(teacher, "image_token_id", None) is None:
        raise ValueError(f"--teacher {args.teacher!r} ({teacher.model_type!r}) is not a LLaVA-shaped model.")
    if teacher.image_token_id != student.image_token_id:
        raise ValueError(
            f"Teacher and student use different image tokens ({teacher.image_token_id} vs {student.image_token_id}); "
            "convert the student from this teacher."
        )
    return student, teacher


def pad_token_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def train_vlm(args: VlmDistillationArguments, training_args, data=None) -> TrainResult:
    """Check inputs, build teacher/student/loss, train, export the student to ``output_dir``, evaluate (answer CE).

    ``data`` replaces ``args.dataset`` (for callers that already hold a DatasetDict).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
    from transmamba.conversion.export import inherited_parameters
    from transmamba.modeling_transmamba import TransLlavaMambaForConditionalGeneration

    from transmamba.image_text import (
        LlavaCollator,
        LlavaConversationEncoder,
        conversation_column,
        load_image_text_dataset,
    )

    from .build import train_and_export
    from .inputs import pick_splits
    from .llava_distill import LlavaDistillationModel
    from .preflight import check_training_output
    from .trainer import DistillationTrainer
    from .vlm_lora import add_vlm_lora, check_lora_options

    resume = check_training_output(training_args)
    training_args.remove_unused_columns = False  # the transform needs the raw image and conversation columns
    training_args.label_names = ["labels"]
    training_args.prediction_loss_only = True  # evaluation reports the answer CE; no full-vocabulary logits kept
    if training_args.ddp_find_unused_parameters is None:
        # A trained vision tower has layers past the selected feature layer that never get a gradient.
        training_args.ddp_find_unused_parameters = args.train_vision_tower
    logger.warning(
        "transmamba train-vlm: process %d/%d, device %s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
    )
    set_seed(training_args.seed)

    load_configs(args)
    if args.lora:
        check_lora_options(args.lora_r, args.lora_alpha, args.lora_dropout)
    if data is None:
        data = load_image_text_dataset(args.dataset, seed=training_args.seed, image_column=args.image_column,
                                       column=args.conversation_column)  # fmt: skip
    for name, split in data.items():  # before a split is held out of a tiny set
        column = conversation_column(split, f"Split {name!r}", args.image_column, args.conversation_column)
    train_data, eval_data = pick_splits(data, args.train_split, args.eval_split, training_args.seed)
    if args.max_train_samples is not None:
        train_data = train_data.select(range(min(args.max_train_samples, len(train_data))))
    if args.max_eval_samples is not None:
        eval_data = eval_data.select(range(min(args.max_eval_samples, len(eval_data))))

    processor = AutoProcessor.from_pretrained(args.teacher)
    encoder = LlavaConversationEncoder(processor, args.image_column, column)
    collator = LlavaCollator(pad_token_id(processor.tokenizer))
    train_data, eval_data = train_data.with_transform(encoder), eval_data.with_transform(encoder)
    teacher = AutoModelForImageTextToText.from_pretrained(args.teacher, dtype="auto")  # frozen: its saved dtype
    student = TransLlavaMambaForConditionalGeneration.from_pretrained(args.student, dtype=torch.float32)
    student.model.vision_tower.requires_grad_(args.train_vision_tower)
    if args.freeze_embeddings:
        student.get_input_embeddings().requires_grad_(False)  # the tied lm_head is the same tensor
    if args.lora:
        student = add_vlm_lora(student, args.lora_r, args.lora_alpha, args.lora_dropout)
    model = LlavaDistillationModel(
        student,
        teacher.config,
        args.alpha,
        args.temperature,
        args.feature_weight,
        args.feature_metric,
        args.feature_layers,
    )
    with torch.no_grad():  # one example through the teacher: placeholder count, image size, vocabulary
        teacher.eval()(**{k: v for k, v in collator([train_data[0]]).items() if k != "labels"})
    trainer = DistillationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator,
        processing_class=processor,
        teacher=teacher if model.needs_teacher else None,  # CE only (alpha 1): no teacher forward per step
        inherited=() if args.lora else inherited_parameters(args.student),
        inherited_lr_scale=args.inherited_lr_scale,
    )
    metrics = train_and_export(trainer, resume)
    print(f"transmamba train-vlm: saved the student to {training_args.output_dir}")
    return TrainResult(training_args.output_dir, metrics, resume, trainer)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (found before training; nothing written)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    return training_command_main(VlmDistillationArguments, PROG, __doc__.splitlines()[0], argv, _command,
                                 **TRAINING_DEFAULTS)  # fmt: skip


def _command(args: VlmDistillationArguments, training_args) -> int:
    train_vlm(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
