"""Checks `transmamba train` and `train-vlm` make before loading anything heavy: the output folder, the Hub
options, what ``--resume_from_checkpoint`` means here, and a processor to read the images with."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainingArguments

from .checkpoints import resolve_resume


def check_training_output(training_args: TrainingArguments) -> str | None:
    """Refuse an unusable ``--output_dir`` and an impossible ``--push_to_hub``; returns the checkpoint to resume."""
    output = Path(training_args.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output_dir {output} is a file; pass a folder (it gets the student and its checkpoints).")
    parent = next((p for p in [output, *output.absolute().parents] if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--output_dir {output}: {parent} is not writable (read-only or no permission); pick another.")
    if training_args.push_to_hub:
        from huggingface_hub import constants, get_token

        if constants.HF_HUB_OFFLINE:
            raise ValueError("--push_to_hub needs the network but HF_HUB_OFFLINE=1; unset it, or drop --push_to_hub.")
        if get_token() is None:
            raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN first.")
    return resolve_resume(output, training_args.resume_from_checkpoint)


def image_processor(teacher: str, student: str):
    """The teacher's image processor, else the student's (convert saves the one it used), else one message."""
    from transformers import AutoImageProcessor

    for source in (teacher, student):
        try:
            return AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError, TypeError):
            continue
    raise ValueError(
        f"Neither --teacher {teacher} nor --student {student} has a preprocessor_config.json; convert the student "
        "with `transmamba convert` (it saves one) or save the teacher's image processor in its folder."
    )
