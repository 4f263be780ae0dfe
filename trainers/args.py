"""`transmamba train`'s own options, parsed with `HfArgumentParser` next to `TrainingArguments`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .baselines import FEATURE_METRICS
from .wrapper import DISTILLATIONS
from .wsab import WEIGHTINGS


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
    feature_metric: str = field(
        default="cosine",
        metadata={"help": "Feature distillation: 'cosine' or 'mse'.", "choices": list(FEATURE_METRICS)},
    )
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
