"""`transmamba train-lm`: train a TransMamba-switch LM on offline text, from scratch or distilled from its teacher.

With ``--teacher`` (the Transformer LM the student was converted from) the loss is ``alpha * CE + (1 - alpha) *
(logits KD + feature_weight * layer-wise feature loss)`` through the project's `DistillationTrainer`; without, a
plain `Trainer` minimises the next-token CE. Data: ``stdlib`` (the CPython standard library sources, PSF
licence, fixed split; see `transmamba.text_data`) or a ``save_to_disk`` folder with a ``text`` column, packed into
``--block_size`` blocks. ``--help`` lists our options first, then every ``TrainingArguments`` option.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import DatasetDict, load_from_disk
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments

from ..model_cards.switch_lm import switch_lm_card
from ..modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM
from ..text_data import byte_tokenizer, pack, stdlib_corpus
from .build import train_and_export
from .switch_distill import SwitchDistillationModel
from .trainer import DistillationTrainer


@dataclass
class LMTrainingArguments:
    student: str = field(metadata={"help": "Folder or Hub id of a TransMamba-switch model (e.g. convert-lm output)."})
    teacher: str | None = field(default=None, metadata={"help": "The Transformer LM to distil from (optional)."})
    dataset: str = field(default="stdlib", metadata={"help": "'stdlib' or a save_to_disk folder with 'text'."})
    block_size: int = field(default=256, metadata={"help": "Tokens per training block."})
    max_train_blocks: int | None = field(default=None, metadata={"help": "Use only the first N training blocks."})
    max_eval_blocks: int | None = field(default=64, metadata={"help": "Use only the first N validation blocks."})
    alpha: float = field(default=0.5, metadata={"help": "L = alpha * CE + (1 - alpha) * L_distill (with --teacher)."})
    temperature: float = field(default=2.0, metadata={"help": "Logits KD temperature."})
    feature_weight: float = field(default=1.0, metadata={"help": "Weight of the layer-wise feature loss."})
    feature_metric: str = field(default="cosine", metadata={"help": "'cosine' or 'mse'.", "choices": ["cosine", "mse"]})

    def __post_init__(self) -> None:
        if self.block_size < 2:
            raise ValueError(f"--block_size must be at least 2, got {self.block_size}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}.")
        if self.dataset != "stdlib" and not Path(self.dataset).is_dir():
            raise ValueError(f"--dataset {self.dataset!r} is neither 'stdlib' nor a save_to_disk folder.")


def load_text(name: str) -> DatasetDict:
    data = stdlib_corpus() if name == "stdlib" else load_from_disk(name)
    if not isinstance(data, DatasetDict) or "train" not in data or "text" not in data["train"].column_names:
        raise ValueError(f"--dataset {name!r} must be a DatasetDict with a 'train' split and a 'text' column.")
    return data


def build_trainer(args: LMTrainingArguments, training_args: TrainingArguments):
    """Check the configs before any weight is loaded, then data, student, (teacher) and the trainer."""
    if not isinstance(AutoConfig.from_pretrained(args.student), TransMambaSwitchConfig):
        raise ValueError(f"--student {args.student!r} is not a TransMamba-switch model; run convert-lm first.")
    teacher_config = AutoConfig.from_pretrained(args.teacher) if args.teacher else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.student)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = byte_tokenizer()
    data = load_text(args.dataset)
    eval_name = "validation" if "validation" in data else "test"
    train = pack(data["train"], tokenizer, args.block_size, args.max_train_blocks)
    evaluation = pack(data[eval_name], tokenizer, args.block_size, args.max_eval_blocks)
    student = TransMambaSwitchForCausalLM.from_pretrained(args.student, dtype=torch.float32)
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if teacher_config is None:
        return Trainer(
            model=student, args=training_args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
        )
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32)
    model = SwitchDistillationModel(
        student, teacher_config, args.alpha, args.temperature, args.feature_weight, args.feature_metric
    )
    training_args.prediction_loss_only = True
    return DistillationTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        teacher=teacher,
    )


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        (LMTrainingArguments, TrainingArguments), prog="transmamba train-lm", description=__doc__.splitlines()[0]
    )
    parser.set_defaults(output_dir="transmamba-switch-lm", eval_strategy="epoch", report_to="none")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input."""
    try:
        args, training_args = build_parser().parse_args_into_dataclasses(args=argv)
        trainer = build_trainer(args, training_args)
    except ValueError as error:
        print(f"transmamba train-lm: error: {error}", file=sys.stderr)
        return 2
    train_and_export(trainer)
    write_card(args, trainer)
    return 0


def write_card(args: LMTrainingArguments, trainer) -> None:
    """The trained model's card (replacing any placeholder): what it was trained on, how long, the eval loss."""
    if not trainer.args.should_save:
        return
    student = getattr(trainer.model, "student", trainer.model)
    losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    how = f"distilled from `{args.teacher}`" if args.teacher else "trained from scratch"
    rows = {
        "Data": f"{args.dataset} ({'CPython stdlib sources, PSF-2.0' if args.dataset == 'stdlib' else 'local'})",
        "Budget": f"{trainer.state.global_step} steps of {trainer.args.train_batch_size} x {args.block_size} tokens",
        "Validation loss (next-token CE)": f"{losses[-1]:.4f}" if losses else "not measured",
    }
    card = switch_lm_card(
        config=student.config,
        num_parameters=student.num_parameters(),
        source=args.student,
        status=f"Trained with `transmamba train-lm`, {how}.",
        rows=rows,
        gemma=student.config.sandwich_norms,
    )
    card.save(Path(trainer.args.output_dir) / "README.md")


if __name__ == "__main__":
    sys.exit(main())
