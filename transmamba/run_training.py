"""How `transmamba run`'s stages train: tensors as datasets, one TrainingArguments recipe, the stage's progress bar,
and resuming a killed stage from its newest complete checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from .run_args import RunArguments
from .trainers.checkpoints import checkpoints

PIXELS = "pixels.safetensors"


class TensorColumns(torch.utils.data.Dataset):
    """Rows of equally long tensors as dicts: the preprocessed images (and cached teacher outputs) of one split."""

    def __init__(self, **columns: torch.Tensor):
        self.columns = columns
        self.length = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


class StageProgress(ProgressCallback):
    """The Trainer's bar, named after the stage, with the losses in the bar instead of a printed dict per log."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(f"  {self.name}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            keys = ("loss", "task_loss", "distill_loss")
            self.training_bar.set_postfix({k: f"{float(logs[k]):.3f}" for k in keys if k in logs})


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_args(directory: Path, args: RunArguments, steps: int, lr: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(directory / "checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.05,
        logging_steps=max(1, min(20, steps // 5)),
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=False,
    )


def train_stage(trainer: Trainer, directory: Path) -> float | None:
    """Train, from the stage's newest complete checkpoint when a killed run left one; the last logged loss.

    Incomplete checkpoints (killed while saving) are this stage's own files and are removed.
    """
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress(directory.name))
    complete, incomplete = checkpoints(directory / "checkpoints")
    for path in incomplete:
        shutil.rmtree(path)
    checkpoint = complete[-1] if complete else None
    if checkpoint:
        tqdm.write(f"  resuming from {checkpoint.name}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else None
