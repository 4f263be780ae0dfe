"""`transmamba run`'s recipe options: how a pretrained teacher is fine-tuned, the teacher-quality gate, the loss
and the mixer init: one typed dataclass, the base of ``RunArguments``.

Why a pretrained teacher gets its own settings: the small ViT the run can train itself starts from random
weights and wants a large learning rate (1e-3); the same rate on DINOv2 destroys its pretrained features (the
loss rose above chance early and the teacher ended at 63-65 % where 1e-4 gave 83 %). So a pretrained teacher
gets 1e-4 with a 10 % linear warm-up by default, and optionally trains its new head alone first.

The gate: distilling from a teacher that is worse than a student trained alone makes the student worse (the
run's old 4-layer ViT teacher, 60-71 %, cost up to 6.8 points on unseen data). Before distillation the run
measures the teacher and the scratch student on the held-out images; when the teacher is not at least
``teacher_margin`` points above, it warns loudly and the model card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from .conversion.args import MIXER_INITS
from .trainers.args import DISTILLATIONS, WEIGHTINGS

logger = logging.get_logger(__name__)

DEFAULT_TEACHER = "dinov2-s14"  # `--teacher` keyword: the offline DINOv2-S/14 built here
SELF_TRAINED_TEACHER = "small-vit"  # `--teacher` keyword: train a small ViT in the run (fast, but a weak teacher)


@dataclass
class RecipeOptions:
    """Options of `transmamba run` that shape the recipe (each becomes ``--name-with-dashes``)."""

    distillation: str = field(
        default="feature",
        metadata={"help": "loss of the TransMamba student besides the task loss: feature (cosine between its "
                  "last layer's tokens and the teacher's; the default, chosen by the measurements in the README: "
                  "ahead of logits KD and WSAB at 112 px and 5 epochs on both datasets), logits (KD from the "
                  "teacher's head), wsab (the paper), wsab+logits (WSAB plus logits KD) or none. Default: feature",
                  "choices": DISTILLATIONS},
    )  # fmt: skip
    logits_weight: float = field(
        default=1.0, metadata={"help": "wsab+logits: L_distill = WSAB + logits_weight * KD (default 1.0)"}
    )
    weighting: str = field(
        default="misaligned",
        metadata={"help": "wsab, wsab+logits: WSAB's layer weights: misaligned (less-aligned layers weigh more, the "
                  "paper), aligned (the opposite sign) or uniform (1 / layers). Default: misaligned",
                  "choices": WEIGHTINGS},
    )  # fmt: skip
    mixer_init: str = field(
        default="standard",
        metadata={"help": "SSM init of the subcloned student: standard (Mamba init, the paper) or attention "
                  "(C <- W_Q, B <- W_K, x <- W_V of the same teacher layer). Default: standard",
                  "choices": MIXER_INITS},
    )  # fmt: skip
    inherited_lr_scale: float = field(
        default=0.1,
        metadata={"help": "learning-rate multiplier of the student tensors subcloning took from the teacher (the "
                  "new SSM parameters train at --learning-rate). Default 0.1: at the full rate the random new "
                  "mixers' early gradients overwrite the pretrained weights (see the README)"},
    )  # fmt: skip
    teacher_learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW learning rate of the teacher (default 1e-4 for a pretrained teacher, 1e-3 for the "
                  "small ViT trained from scratch)"},
    )  # fmt: skip
    teacher_warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "share of the teacher's steps with a linear learning-rate warm-up (default 0.1 for a "
                  "pretrained teacher, 0.05 for the small ViT)"},
    )  # fmt: skip
    teacher_head_steps: int = field(
        default=0,
        metadata={"help": "pretrained teacher: train only its new head for this many steps first, then everything "
                  "(counted within --teacher-steps; default 0)"},
    )  # fmt: skip
    teacher_margin: float = field(
        default=2.0,
        metadata={"help": "gate: warn unless the teacher's held-out top-1 is at least this many points above the "
                  "scratch student's (default 2.0)"},
    )  # fmt: skip

    def __post_init__(self):
        if self.distillation not in DISTILLATIONS:
            raise ValueError(f"--distillation must be one of {', '.join(DISTILLATIONS)}, got {self.distillation!r}.")
        if self.mixer_init not in MIXER_INITS:
            raise ValueError(f"--mixer-init must be one of {', '.join(MIXER_INITS)}, got {self.mixer_init!r}.")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if not 0 < self.inherited_lr_scale <= 1:
            raise ValueError(f"--inherited-lr-scale must be in (0, 1], got {self.inherited_lr_scale}.")
        if self.logits_weight < 0:
            raise ValueError(f"--logits-weight must be at least 0, got {self.logits_weight}.")
        if self.teacher_learning_rate is not None and self.teacher_learning_rate <= 0:
            raise ValueError(f"--teacher-learning-rate must be positive, got {self.teacher_learning_rate}.")
        if self.teacher_warmup_ratio is not None and not 0.0 <= self.teacher_warmup_ratio < 1.0:
            raise ValueError(f"--teacher-warmup-ratio must be in [0, 1), got {self.teacher_warmup_ratio}.")
        if self.teacher_head_steps < 0:
            raise ValueError(f"--teacher-head-steps must be at least 0, got {self.teacher_head_steps}.")

    def teacher_lr(self, pretrained: bool) -> float:
        return self.teacher_learning_rate or (1e-4 if pretrained else 1e-3)

    def teacher_warmup(self, pretrained: bool) -> float:
        if self.teacher_warmup_ratio is not None:
            return self.teacher_warmup_ratio
        return 0.1 if pretrained else 0.05

    def distiller_options(self) -> dict:
        return {"logits_weight": self.logits_weight, "weighting": self.weighting}


# --- the teacher-quality gate ------------------------------------------------------------------------------------


CEILING_TOP1 = 0.98  # a scratch student this good leaves a teacher little to add: the gate says so, not only "worse"


def teacher_gate(teacher_top1: float, scratch_top1: float, margin_points: float, eval_images: int) -> dict:
    """Compare the teacher's held-out top-1 with the scratch student's; warn loudly when it is not clearly better.

    Returns what the results file and the card record: both accuracies, the margin in points, the required margin,
    ``passed`` and a one-line ``message``.
    """
    margin = round(100 * (teacher_top1 - scratch_top1), 2)
    passed = margin >= margin_points
    numbers = (f"teacher {100 * teacher_top1:.2f} % vs scratch student {100 * scratch_top1:.2f} % on {eval_images} "
               f"held-out images: margin {margin:+.2f} points, required >= {margin_points:+.2f}")  # fmt: skip
    if passed:
        message = f"teacher-quality gate passed: {numbers}."
    else:
        message = (f"teacher-quality gate FAILED: {numbers}. Distilling from a teacher that is not clearly better "
                   "than a student trained alone can make the student worse; fine-tune the teacher longer or at a "
                   "smaller --teacher-learning-rate, or pass a stronger --teacher.")  # fmt: skip
        if scratch_top1 >= CEILING_TOP1:
            message += (f" The scratch student is already at {100 * scratch_top1:.2f} %, so the task may simply "
                        "leave no room for a teacher to help.")  # fmt: skip
        banner = "!" * 100
        logger.warning(f"\n{banner}\n{message}\n{banner}")
    return {"teacher_top1": teacher_top1, "scratch_top1": scratch_top1, "margin_points": margin,
            "required_margin_points": margin_points, "eval_images": eval_images, "passed": passed,
            "message": message}  # fmt: skip
