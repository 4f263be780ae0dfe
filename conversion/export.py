"""Write a Hub-ready model folder atomically (`transmamba.folders.atomic_folder`): an interrupted convert never
leaves a folder that looks finished, and `--overwrite` never replaces a folder this project did not write."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard
from transformers import PreTrainedModel

from ..folders import atomic_folder

REPORT_NAME = "subcloning_report.json"


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
    with atomic_folder(output, overwrite) as partial:
        model.save_pretrained(partial)
        if image_processor is not None:
            image_processor.save_pretrained(partial)
        (partial / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        card.save(partial / "README.md")
        for name, text in (extra_files or {}).items():
            (partial / name).write_text(text)
    return output


def inherited_parameters(student: Path | str) -> frozenset[str]:
    """Names of the student tensors that subcloning copied or sliced from the teacher, from the report of a
    student folder or Hub id (empty when there is none, e.g. a student not made by `transmamba convert`)."""
    from transformers.utils import cached_file

    found = cached_file(str(student), REPORT_NAME, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)  # fmt: skip
    if found is None:
        return frozenset()
    report = Path(found)
    tensors = json.loads(report.read_text()).get("tensors", {})
    return frozenset(name for name, entry in tensors.items() if entry.get("status") in ("copied", "sliced"))
