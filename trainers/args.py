"""`transmamba train`'s and `train-vlm`'s own options, parsed with `HfArgumentParser` next to `TrainingArguments`,
and what a training returns. Light on purpose (no torch): `__post_init__` rejects wrong values before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transmamba.cli_support import check_choice, check_fraction, check_positive

DISTILLATIONS = ("wsab", "wsab+logits", "feature", "logits", "none")
WEIGHTINGS = ("misaligned", "aligned", "uniform")
FEATURE_METRICS = ("cosine", "mse")
FEATURE_LAYERS = ("spread", "inherited")
INHERITED_LR_HELP = (
    "Learning-rate multiplier of the student tensors that subcloning took from the teacher (listed in the "
    "student's subcloning_report.json; the new SSM parameters train at the full rate)."
)


def _check_common(args) -> None:
    """Checks both argument classes share: names given, a loss weight in [0, 1], positive sample limits."""
    for name in ("teacher", "student"):
        if not str(getattr(args, name)).strip():
            raise ValueError(f"--{name} is empty; pass a {name} (see --help).")
    check_fraction("--alpha", args.alpha)
    check_positive("--temperature", args.temperature)
    check_choice("--feature_metric", args.feature_metric, FEATURE_METRICS)
    if not 0 < args.inherited_lr_scale <= 1:
        raise ValueError(f"--inherited_lr_scale must be in (0, 1], got {args.inherited_lr_scale}.")
    low = [f"--{n}" for n in ("max_train_samples", "max_eval_samples") if (getattr(args, n) or 1) < 1]
    if low:
        raise ValueError(f"{', '.join(low)} must be at least 1.")


@dataclass
class DistillationArguments:
    teacher: str = field(metadata={"help": "Teacher: a Hub id or folder of a transformers ViT-family model."})
    student: str = field(
        metadata={"help": "Student: a Hub id or folder of a TransMamba model (the output of `transmamba convert`)."}
    )
    dataset: str = field(
        default="digits",
        metadata={
            "help": "Image-classification data: a Hub dataset name, a local `imagefolder` directory, or an offline "
            "default ('digits', 'fashion_mnist')."
        },
    )
    distillation: str = field(
        default="wsab",
        metadata={"help": "Loss besides the task loss.", "choices": list(DISTILLATIONS)},
    )
    alpha: float = field(default=0.5, metadata={"help": "L = alpha * L_task + (1 - alpha) * L_distill."})
    tau: float = field(default=1.0, metadata={"help": "WSAB: softmax temperature of the adaptive layer weights."})
    weighting: str = field(
        default="misaligned",
        metadata={
            "help": "WSAB layer weights: 'misaligned' (less-aligned layers weigh more, the paper), 'aligned' "
            "(opposite sign, ablation) or 'uniform'.",
            "choices": list(WEIGHTINGS),
        },
    )
    cls_weight: float | None = field(
        default=None,
        metadata={"help": "WSAB: weight of the class-token cosine (default: one token's share, 1/length)."},
    )
    temperature: float = field(default=2.0, metadata={"help": "Logits distillation: KD temperature T."})
    logits_weight: float = field(
        default=1.0, metadata={"help": "wsab+logits: L_distill = L_WSAB + logits_weight * L_KD."}
    )
    feature_metric: str = field(
        default="cosine",
        metadata={"help": "Feature distillation: 'cosine' or 'mse'.", "choices": list(FEATURE_METRICS)},
    )
    inherited_lr_scale: float = field(default=0.1, metadata={"help": INHERITED_LR_HELP})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (+ the head) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation images."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class labels."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate on (default: 'validation' or 'test'; none -> 10%% of the train split)."},
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id the card records as base_model (default: the teacher's Hub id or _name_or_path)."},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Name the card gives a local --dataset folder (default: the folder's name)."}
    )

    def __post_init__(self) -> None:
        _check_common(self)
        check_choice("--distillation", self.distillation, DISTILLATIONS)
        check_choice("--weighting", self.weighting, WEIGHTINGS)
        check_positive("--tau", self.tau)
        if self.cls_weight is not None and self.cls_weight < 0:
            raise ValueError(f"--cls_weight must be >= 0, got {self.cls_weight}.")
        if self.lora_r < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError("--lora_r must be at least 1 and --lora_dropout in [0, 1).")


@dataclass
class TrainResult:
    """What a training wrote: the student folder, its final evaluation, where it resumed from, and the trainer."""

    output_dir: Path
    metrics: dict[str, float]
    resumed_from: str | None
    trainer: Any  # the DistillationTrainer, for callers that inspect its state


@dataclass
class VlmDistillationArguments:
    teacher: str = field(
        metadata={"help": "Teacher: a Hub id or folder of a LLaVA model (LlavaForConditionalGeneration + processor)."}
    )
    student: str = field(
        metadata={"help": "Student: a Hub id or folder of a TransLlavaMamba model (subcloned from the teacher)."}
    )
    dataset: str = field(
        default="default",
        metadata={
            "help": "Image-text data in LLaVA conversation format: 'default' (offline: Fashion-MNIST or digits "
            "turned into questions and answers), 'fashion_mnist', 'digits', a save_to_disk folder, or a Hub id."
        },
    )
    alpha: float = field(default=0.5, metadata={"help": "L = alpha * CE(answers) + (1 - alpha) * L_distill."})
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Logits KD temperature T (KL on answer tokens). 1 by default: at 2, the image students' value, "
            "a Gemma-3 student answered 52 %% of the held-out questions instead of 66 %% (BENCHMARKS.md, issue 20)."
        },
    )
    feature_weight: float = field(
        default=1.0, metadata={"help": "L_distill = KD + feature_weight * layer-wise feature loss (0: logits only)."}
    )
    feature_metric: str = field(
        default="cosine",
        metadata={"help": "Layer-wise feature loss: 'cosine' (1 - cos) or 'mse'.", "choices": ["cosine", "mse"]},
    )
    feature_layers: str = field(
        default="spread",
        metadata={
            "help": "Which teacher layer each student layer's features meet: 'spread' (the same relative depth) or "
            "'inherited' (layer i for i < n, the layer a first-n-layers subclone took its weights from); the last "
            "meets the teacher's last either way.",
            "choices": list(FEATURE_LAYERS),
        },
    )
    train_vision_tower: bool = field(
        default=False, metadata={"help": "Also train the vision tower (frozen by default, as LLaVA does)."}
    )
    inherited_lr_scale: float = field(default=0.1, metadata={"help": INHERITED_LR_HELP})

    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the token embeddings (and a tied lm_head) frozen: Gemma-3's 262k-token table is 168M "
            "of a 270M student's parameters, and its Adam update dominates a CPU step."
        },
    )
    lora: bool = field(
        default=False,
        metadata={
            "help": "LoRA adapters on the language model's projections only; "
            "merged into the saved student (trainers/vlm_lora.py)."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    conversation_column: str | None = field(
        default=None, metadata={"help": "Column holding the conversations (default: 'conversations' or 'messages')."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate on (default: 'validation' or 'test'; none -> 10%% of the train split)."},
    )

    def __post_init__(self) -> None:
        _check_common(self)
        if self.feature_weight < 0:
            raise ValueError(f"--feature_weight must be >= 0, got {self.feature_weight}.")
        check_choice("--feature_layers", self.feature_layers, FEATURE_LAYERS)
