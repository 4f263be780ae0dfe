"""Stage-1 alignment of a LLaVA teacher (LLaVA's "feature alignment"): train only the projector, LM and vision
tower frozen, on image-text conversations, so a composed teacher (DINOv2 + Gemma-3, random projector) can see.
``--lora_r N`` adds LoRA adapters (rank N) on the language model's attention and MLP projections beside the
projector: a projector alone left Gemma-3 270M near chance and never ending its answers (it did not learn the
end-of-turn token); the adapters are merged into the saved teacher, which loads as a plain LLaVA model.

The loss is the answer-token cross-entropy (the assistant's tokens only), the model is wrapped like a student
(``DistillationModel`` with no distiller) and trained by the same ``DistillationTrainer``, so checkpoints,
``--resume_from_checkpoint`` and the export of a clean model folder behave as in ``train``/``train-vlm``.

    python -m transmamba.trainers.align_projector --teacher gemma-llava --output_dir gemma-llava-aligned \\
        --max_train_images 2000 --max_steps 300 --per_device_train_batch_size 8 --learning_rate 2e-3 \\
        --lora_r 16 --class_repeats 2
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForImageTextToText, AutoProcessor, HfArgumentParser, TrainingArguments, set_seed

from transmamba.image_text import PROMPT_FORMATS, LlavaCollator, LlavaConversationEncoder
from transmamba.vqa_eval import SOURCES, vqa_splits

from .baselines import NoDistillation
from .build import train_and_export
from .llava_distill import answer_positions
from .trainer import DistillationTrainer
from .vlm_lora import TEACHER_LORA_TARGETS, add_vlm_lora, base_student, check_lora_options
from .wrapper import DistillationModel, DistillationOutput

logger = logging.getLogger("transmamba.align_projector")


@dataclass
class AlignArguments:
    teacher: str = field(metadata={"help": "LLaVA folder whose projector to train (compose_gemma_llava's output)."})
    source: str = field(
        default="default", metadata={"help": "Offline images for the questions.", "choices": list(SOURCES)}
    )
    max_train_images: int = field(default=2000, metadata={"help": "Train images (4 questions each)."})
    max_eval_images: int = field(default=25, metadata={"help": "Held-out test images for the eval loss."})
    class_repeats: int = field(default=1, metadata={"help": "Class questions per train image (a sampling weight)."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LM's projections (0: projector only)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha (with --lora_r)."})
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "auto: the processor's chat template if any, else LLaVA-1.5.",
            "choices": list(PROMPT_FORMATS),
        },
    )

    def __post_init__(self):
        if self.max_train_images < 1 or self.max_eval_images < 1:
            raise ValueError("--max_train_images and --max_eval_images must be at least 1.")
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}.")
        if self.class_repeats < 1 or self.lora_r < 0:
            raise ValueError("--class_repeats must be at least 1 and --lora_r at least 0 (0: no adapters).")
        if self.lora_r:
            check_lora_options(self.lora_r, self.lora_alpha, 0.0)


class AnswerCEModel(DistillationModel):
    """A LLaVA-shaped model trained on its answer-token cross-entropy alone (logits only at answer positions)."""

    pipeline_tag = "image-text-to-text"

    def __init__(self, model: torch.nn.Module):
        super().__init__(model, NoDistillation(), alpha=1.0)

    def forward(self, input_ids, pixel_values, labels, attention_mask=None) -> DistillationOutput:
        model = base_student(self.student)  # a PeftModel's adapters live inside its base model
        out = model.model(
            input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, use_cache=False,
            return_dict=True,
        )  # fmt: skip
        scored, targets = answer_positions(labels)
        task = F.cross_entropy(model.lm_head(out.last_hidden_state[scored]).float(), targets)
        return DistillationOutput(loss=task, logs={"task_loss": task.detach()} if self.training else None)


def freeze_all_but_projector(model: torch.nn.Module, lora_r: int = 0, lora_alpha: int = 32) -> torch.nn.Module:
    """Only ``multi_modal_projector`` trains (and, with ``lora_r``, LoRA adapters on the language model); returns
    the model to train (a ``PeftModel`` with adapters)."""
    model.requires_grad_(False)
    if lora_r:
        model = add_vlm_lora(model, lora_r, lora_alpha, targets=TEACHER_LORA_TARGETS)
    base_student(model).model.multi_modal_projector.requires_grad_(True)
    return model


def run(args: AlignArguments, training_args: TrainingArguments) -> DistillationTrainer:
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    training_args.prediction_loss_only = True
    set_seed(training_args.seed)
    splits = vqa_splits(args.source, args.max_train_images, args.max_eval_images, seed=training_args.seed,
                        class_repeats=args.class_repeats)  # fmt: skip
    processor = AutoProcessor.from_pretrained(args.teacher)
    encoder = LlavaConversationEncoder(processor, prompt_format=args.prompt_format)
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    model = AutoModelForImageTextToText.from_pretrained(args.teacher, dtype=torch.float32)
    model = freeze_all_but_projector(model, args.lora_r, args.lora_alpha)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.warning("align_projector: %d trainable parameters (projector%s), %d conversations", trainable,
                   f" + LoRA r={args.lora_r}" if args.lora_r else "", len(splits["train"]))  # fmt: skip
    trainer = DistillationTrainer(
        model=AnswerCEModel(model),
        args=training_args,
        train_dataset=splits["train"].with_transform(encoder),
        eval_dataset=splits["test"].with_transform(encoder),
        data_collator=LlavaCollator(pad),
        processing_class=processor,
    )
    train_and_export(trainer)
    notice = Path(args.teacher, "NOTICE")
    if notice.is_file() and training_args.should_save:
        shutil.copy(notice, Path(training_args.output_dir, "NOTICE"))
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((AlignArguments, TrainingArguments), prog="python -m transmamba.trainers.align_projector")
    parser.set_defaults(report_to="none", eval_strategy="no")
    try:
        args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        print(f"align_projector: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    run(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
