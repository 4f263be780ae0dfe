"""Write a Hub-ready model folder atomically: everything goes into a hidden temporary sibling that is renamed to
the output only when complete, so an interrupted convert never leaves a folder that looks finished."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from huggingface_hub import ModelCard
from transformers import PreTrainedModel

REPORT_NAME = "subcloning_report.json"
PARTIAL_MARK = ".partial-"


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless overwriting) before any heavy work."""
    if output.exists() and not overwrite:
        raise ValueError(f"Output {output} already exists; pass --overwrite to replace it or choose another --output.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"Output {output} exists and is not a folder; remove it or choose another --output.")
    if not output.parent.is_dir():
        raise ValueError(f"Parent folder {output.parent} of --output does not exist; create it first.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(output: Path) -> list[Path]:
    """Delete temporary siblings left by converts that were killed (their process is gone)."""
    removed = []
    for path in output.parent.glob(f".{output.name}{PARTIAL_MARK}*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def write_model_folder(
    output: Path,
    model: PreTrainedModel,
    image_processor,
    report: dict,
    card: ModelCard,
    overwrite: bool,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """config.json (+ auto_map) and code files, model.safetensors, the processor's files (image processor, or a
    VLM's processor/tokenizer; None when the teacher has none), the report, README.md, and ``extra_files``
    (name -> text, e.g. a license NOTICE)."""
    output = output.absolute()
    remove_stale_partials(output)
    partial = output.parent / f".{output.name}{PARTIAL_MARK}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    model.save_pretrained(partial)
    if image_processor is not None:
        image_processor.save_pretrained(partial)
    (partial / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    card.save(partial / "README.md")
    for name, text in (extra_files or {}).items():
        (partial / name).write_text(text)
    for path in partial.iterdir():  # durable before the rename makes the folder visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if output.exists():
        check_output(output, overwrite)
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        partial.rename(output)
        shutil.rmtree(old)
    else:
        partial.rename(output)
    return output
