"""LoRA for a TransLlavaMamba student (`train-vlm --lora`): adapters on the language model's projections only.

Users fine-tune 0.6B+ vision-language models with adapters. The adapters go on every Mamba layer's mixer
(``in_proj``, ``out_proj``) and gated MLP (``gate_proj``, ``up_proj``, ``down_proj``) — a regular expression keeps
the vision tower's own ``out_proj``/``fc`` layers out. Nothing else trains: SSM parameters, norms, embeddings,
projector and vision tower stay as subcloned. The Trainer's export merges the adapters (``merge_and_unload``), so
the saved folder is a plain TransLlavaMamba that loads without peft.

The LLaVA teacher's alignment (`trainers/align_projector.py --lora_r`) uses the same helper with
:data:`TEACHER_LORA_TARGETS`: its language model's attention and MLP projections, beside the trained projector.
"""

from __future__ import annotations

from torch import nn

VLM_LORA_TARGETS = r".*language_model\.layers\.\d+\.(mixer\.(in_proj|out_proj)|mlp\.(gate_proj|up_proj|down_proj))"
TEACHER_LORA_TARGETS = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)


def check_lora_options(r: int, alpha: int, dropout: float) -> None:
    """A ValueError naming the bad ``--lora*`` value; called before any model is loaded."""
    if r < 1 or alpha < 1:
        raise ValueError(f"--lora_r and --lora_alpha must be positive, got {r} and {alpha}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}.")


def add_vlm_lora(
    student: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0, targets: str = VLM_LORA_TARGETS
) -> nn.Module:
    """``student`` wrapped in a ``PeftModel`` whose only trainable parameters are the adapters on ``targets``."""
    from peft import LoraConfig, get_peft_model

    check_lora_options(r, alpha, dropout)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    return get_peft_model(student, config)


def base_student(student: nn.Module) -> nn.Module:
    """The student itself, also inside a ``PeftModel`` (whose ``.model`` is not the student's ``.model``)."""
    return student.get_base_model() if hasattr(student, "get_base_model") else student
