"""`transmamba train-vlm`: distil a TransLlavaMamba student from its LLaVA teacher on image-text conversations.

Loss: alpha * CE on the answer tokens + (1 - alpha) * (logits KD on the answer tokens + feature_weight *
layer-wise feature loss), see `transmamba.trainers.llava_distill`. Runs as ``transmamba train-vlm ...`` and as
``accelerate launch -m transmamba.trainers.train_vlm ...``. ``--help`` lists our options first, then every
``TrainingArguments`` option.
"""

from __future__ import annotations

import logging
import sys

import torch
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    HfArgumentParser,
    PretrainedConfig,
    TrainingArguments,
    set_seed,
)
from transmamba.modeling_transmamba import TransLlavaMambaConfig, TransLlavaMambaForConditionalGeneration

from transmamba.image_text import LlavaCollator, LlavaConversationEncoder, conversation_column, load_image_text_dataset

from .args import VlmDistillationArguments
from .build import train_and_export
from .inputs import pick_splits
from .llava_distill import LlavaDistillationModel
from .trainer import DistillationTrainer
from .vlm_lora import add_vlm_lora, check_lora_options

logger = logging.getLogger("transmamba.train_vlm")


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        (VlmDistillationArguments, TrainingArguments), prog="transmamba train-vlm", description=__doc__.splitlines()[0]
    )
    parser.set_defaults(output_dir="transllava-mamba-student", eval_strategy="epoch", report_to="none")
    return parser


def load_configs(args: VlmDistillationArguments) -> tuple[TransLlavaMambaConfig, PretrainedConfig]:
    """Student and teacher configs, refused before any weight is loaded when they cannot be a pair."""
    student = AutoConfig.from_pretrained(args.student)
    if not isinstance(student, TransLlavaMambaConfig):
        raise ValueError(
            f"--student {args.student!r} is a {student.model_type!r} model, not a TransLlavaMamba; subclone the LLaVA "
            "teacher first (transmamba.conversion.llava.subclone_llava) and pass its output folder."
        )
    teacher = AutoConfig.from_pretrained(args.teacher)
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


def run(args: VlmDistillationArguments, training_args: TrainingArguments, data: DatasetDict | None = None):
    """Check inputs, build teacher/student/loss, train, evaluate (answer CE), export the student to ``output_dir``.

    ``data`` replaces ``args.dataset`` (for callers that already hold a DatasetDict). Returns the trainer.
    """
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
    if args.lora:
        student = add_vlm_lora(student, args.lora_r, args.lora_alpha, args.lora_dropout)
    model = LlavaDistillationModel(
        student, teacher.config, args.alpha, args.temperature, args.feature_weight, args.feature_metric
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
        teacher=teacher,
    )
    return train_and_export(trainer)


def main(argv: list[str] | None = None) -> int:
    args, training_args = build_parser().parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    run(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
