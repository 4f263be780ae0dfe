"""`transmamba train-retrieval`: train a TransVideoMamba student for text-video retrieval (CLIP4Clip-style).

The video tower is a converted student (`transmamba convert --student videomamba-t`), pooled (class token) and
projected; the text tower a pretrained `transformers` encoder, frozen by default (all-MiniLM-L6-v2 offline), its
mean-pooled features projected; symmetric InfoNCE, plus, with ``--teacher``, a cosine loss to the image
teacher's per-frame features (``--distill_target``, see `trainers/retrieval.py`). Evaluation reports R@1/R@5/R@10,
median and mean rank.
"""

from __future__ import annotations

import logging
import sys

from transmamba.cli_support import training_command_main, training_parser

from .retrieval_args import RetrievalArguments

PROG = "transmamba train-retrieval"
TRAINING_DEFAULTS = {"output_dir": "transmamba-retrieval", "eval_strategy": "epoch", "report_to": "none"}


def build_parser():
    """The full parser (our options + `TrainingArguments`; imports torch)."""
    return training_parser(RetrievalArguments, PROG, __doc__.splitlines()[0], **TRAINING_DEFAULTS)


def load_video_student(name: str):
    """The converted video student; any other model type is refused with the command that makes one."""
    from transformers import AutoConfig
    from transmamba.modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig

    config = AutoConfig.from_pretrained(name)
    if not isinstance(config, TransVideoMambaConfig):
        raise ValueError(
            f"--student {name!r} is a {config.model_type!r} model, not a TransVideoMamba one; convert an image "
            "teacher first with `transmamba convert --student videomamba-t` and pass its output folder."
        )
    return TransMambaForVideoClassification.from_pretrained(name)


def run(args: RetrievalArguments, training_args, data=None):
    """Check the data and student (cheap), build the towers, train, evaluate, save the retrieval model."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, set_seed

    from transmamba.video_data import load_video_dataset, require_columns

    from .retrieval import RetrievalDistillation, RetrievalTrainer, build_retrieval_model, retrieval_transform

    training_args.remove_unused_columns = False
    training_args.label_names = []
    set_seed(training_args.seed)
    data = data if data is not None else load_video_dataset(args.dataset, args.num_train_clips, seed=training_args.seed)
    for split in ("train", "test"):
        require_columns(data[split], {"video": args.video_column, "caption": args.caption_column}, args.dataset)
    student = load_video_student(args.student)
    processor = AutoImageProcessor.from_pretrained(args.student)
    tokenizer = AutoTokenizer.from_pretrained(args.text_encoder)
    train, test = data["train"], data["test"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        test = test.select(range(min(args.max_eval_samples, len(test))))
    transform = retrieval_transform(processor, tokenizer, student.config.num_frames, args.video_column,
                                    args.caption_column, args.max_length)  # fmt: skip
    model = build_retrieval_model(
        None if args.from_scratch else student,
        args.text_encoder,
        args.projection_dim,
        vision_config=student.config,
        freeze_text_model=not args.train_text_encoder,
    )
    teacher = AutoModel.from_pretrained(args.teacher) if args.teacher else None
    teacher_dim = teacher.config.hidden_size if teacher is not None else 0
    wrapper = RetrievalDistillation(model, teacher_dim, args.distill_weight if teacher is not None else 0.0,
                                    args.distill_target)  # fmt: skip
    trainer = RetrievalTrainer(
        model=wrapper,
        args=training_args,
        train_dataset=train.with_transform(transform),
        eval_dataset=test.with_transform(transform),
        teacher=teacher,
        tokenizer=tokenizer,
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.evaluate()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (one message)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    return training_command_main(RetrievalArguments, PROG, __doc__.splitlines()[0], argv, _command,
                                 **TRAINING_DEFAULTS)  # fmt: skip


def _command(args: RetrievalArguments, training_args) -> int:
    run(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
