"""Resuming interrupted training: find the newest COMPLETE checkpoint, and load it the way the library loads models.

A checkpoint is complete when the Trainer wrote ``trainer_state.json`` whole (it comes after the weights, optimizer
and scheduler); a process killed while saving leaves a ``checkpoint-N`` without it, or with a truncated one, and
that checkpoint is skipped with a message. `LibraryLoadingTrainer` restores a transformers-native model (ViT,
DINOv2, ...) through ``from_pretrained``: transformers 5 renames checkpoint keys on load
(``attention.attention.query`` -> ``attention.q_proj``), and the Trainer's plain ``load_state_dict`` would
silently leave those weights at init.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import PreTrainedModel, Trainer
from transformers.utils import logging

logger = logging.get_logger("transmamba.checkpoints")
STATE = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")
LAST = ("last", "latest", "true", "True", "yes")


def checkpoints(folder: Path) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) ``checkpoint-N`` folders of ``folder``, each oldest first."""
    found = sorted(
        (path for path in Path(folder).glob("checkpoint-*") if path.is_dir() and _STEP.match(path.name)),
        key=lambda path: int(_STEP.match(path.name).group(1)),
    )
    done = {path: _state_is_whole(path / STATE) for path in found}
    return [p for p in found if done[p]], [p for p in found if not done[p]]


def _state_is_whole(state: Path) -> bool:
    """Written to the end: a kill during ``save_to_json`` leaves the file empty or cut off mid-document."""
    try:
        return isinstance(json.loads(state.read_text()), dict)
    except (OSError, ValueError):
        return False


def newest_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones are reported (and left alone) on the way."""
    complete, incomplete = checkpoints(folder)
    for path in incomplete:
        logger.warning(f"skipping {path}: incomplete (no whole {STATE}; the run was killed while saving it)")
    return complete[-1] if complete else None


def resolve_resume(output_dir: str | Path, requested: str | None) -> str | None:
    """What ``--resume_from_checkpoint`` means here: unset resumes automatically from the newest complete checkpoint
    in ``output_dir``; ``last`` (or ``True``) requires one; a path must be a complete checkpoint; ``no`` starts over."""
    output_dir = Path(output_dir)
    if requested in ("no", "none", "false", "False"):
        return None
    if requested is None or requested in LAST:
        newest = newest_complete(output_dir) if output_dir.is_dir() else None
        if newest is None and requested is not None:
            raise ValueError(
                f"--resume_from_checkpoint {requested}: {output_dir} has no complete checkpoint to resume from; "
                "drop the option to start from step 0."
            )
        if newest is not None:
            logger.warning(f"resuming from {newest} (pass --resume_from_checkpoint no to start over)")
        return str(newest) if newest else None
    path = Path(requested)
    if not _state_is_whole(path / STATE):
        newest = newest_complete(path.parent) if path.parent.is_dir() else None
        hint = f"; the newest complete one is {newest}" if newest else ""
        what = "does not exist" if not path.exists() else f"is incomplete (no whole {STATE}: killed while saving)"
        raise ValueError(f"--resume_from_checkpoint {requested} {what}{hint}. Pass --resume_from_checkpoint last.")
    return str(path)


class LibraryLoadingTrainer(Trainer):
    """A Trainer whose resume loads a transformers model's weights through ``from_pretrained`` (key mapping)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        if not isinstance(model, PreTrainedModel) or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, config=model.config)
        model.load_state_dict(loaded.state_dict(), strict=True)
