"""`transmamba train-lm`'s own options, parsed next to `TrainingArguments`. Light on purpose (no torch), so
``--help`` and an error in these options answer before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transmamba.cli_support import check_fraction


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
        check_fraction("--alpha", self.alpha)
        if self.dataset != "stdlib" and not Path(self.dataset).is_dir():
            raise ValueError(f"--dataset {self.dataset!r} is neither 'stdlib' nor a save_to_disk folder.")
