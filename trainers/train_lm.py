"""`transmamba train-lm`: train a TransMamba-switch LM on offline text, from scratch or distilled from its teacher.

With ``--teacher`` (the Transformer LM the student was converted from) the loss is ``alpha * CE + (1 - alpha) *
(logits KD + feature_weight * layer-wise feature loss)`` through the project's `DistillationTrainer`; without, a
plain `Trainer` minimises the next-token CE. Data: ``stdlib`` (the CPython standard library sources, PSF
licence, fixed split; see `transmamba.text_data`) or a ``save_to_disk`` folder with a ``text`` column, packed into
``--block_size`` blocks. ``--help`` lists our options (quickly: no torch) and ``--help-training`` every
``TrainingArguments`` option too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli_support import training_command_main, training_parser
from .lm_args import LMTrainingArguments

PROG = "transmamba train-lm"
TRAINING_DEFAULTS = {"output_dir": "transmamba-switch-lm", "eval_strategy": "epoch", "report_to": "none"}


def load_text(name: str):
    """The text corpus as a DatasetDict with a 'train' split and a 'text' column."""
    from datasets import DatasetDict, load_from_disk

    from ..text_data import stdlib_corpus

    data = stdlib_corpus() if name == "stdlib" else load_from_disk(name)
    if not isinstance(data, DatasetDict) or "train" not in data or "text" not in data["train"].column_names:
        raise ValueError(f"--dataset {name!r} must be a DatasetDict with a 'train' split and a 'text' column.")
    return data


def build_trainer(args: LMTrainingArguments, training_args):
    """Check the configs before any weight is loaded, then data, student, (teacher) and the trainer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Trainer

    from ..modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM
    from ..text_data import byte_tokenizer, pack
    from .switch_distill import SwitchDistillationModel
    from .trainer import DistillationTrainer

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


def build_parser():
    """The full parser (our options + `TrainingArguments`; imports torch)."""
    return training_parser(LMTrainingArguments, PROG, __doc__.splitlines()[0], **TRAINING_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input."""
    return training_command_main(LMTrainingArguments, PROG, __doc__.splitlines()[0], argv, train_lm,
                                 **TRAINING_DEFAULTS)  # fmt: skip


def train_lm(args: LMTrainingArguments, training_args) -> int:
    """Build (every check first: a ValueError is bad input, nothing trained), train, export, write the card."""
    from .build import train_and_export

    trainer = build_trainer(args, training_args)
    train_and_export(trainer)
    write_card(args, trainer)
    return 0


def write_card(args: LMTrainingArguments, trainer) -> None:
    """The trained model's card (replacing any placeholder): what it was trained on, how long, the eval loss."""
    from ..model_cards.switch_lm import switch_lm_card

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
