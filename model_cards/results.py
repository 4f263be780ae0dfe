"""`RunResults`: the measurements a run (or `transmamba train`) stores next to its model, and the only source of
the numbers in the model card. `transmamba run`'s stages build it, the export writes it as
``transmamba_results.json``, and `transmamba card` reads it back.

Accuracies are fractions in [0, 1]; a value that was not measured is None or absent, and the card leaves it out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_NAME = "transmamba_results.json"
RESULTS_FORMAT = "transmamba-results/1"
ROLES = ("teacher", "scratch", "transmamba")


@dataclass
class RunResults:
    """One trained student's measured results (see the module docstring)."""

    model_name: str  # title of the card and model-index name
    teacher: dict[str, Any]  # source (public name), base_model (Hub id | None), class, trained_here, steps
    student: dict[str, Any]  # spec, family, class, parameters, hidden_size, num_hidden_layers, num_directions, ...
    dataset: dict[str, Any]  # name, hub_id, source, train_split, eval_split, train_size, eval_size, num_labels
    budget: dict[str, Any]  # steps, epochs, batch_size, learning_rate, image_size, seeds, distillation, alpha
    accuracy: dict[str, float | None]  # teacher, scratch, transmamba
    teacher_gate: dict[str, Any] | None = None  # teacher_top1, scratch_top1, margin_points, passed, message
    license: str | None = None  # the student's license (inherited from the teacher / data)
    repo_id: str | None = None  # Hub repo the folder is pushed to (used in the loading snippet)
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    date: str | None = None  # ISO-8601 UTC time the results were measured
    machine: str | None = None  # e.g. "2 CPU cores (x86_64), torch 2.13.0+cpu"
    command: str = "transmamba run"  # what produced the numbers
    format: str = RESULTS_FORMAT

    def __post_init__(self) -> None:
        self.check(RESULTS_NAME)

    def check(self, where: str) -> None:
        """The keys the card cannot do without, and accuracies that are fractions; one ValueError naming the fix."""
        if self.format != RESULTS_FORMAT:
            raise ValueError(f"{where}: 'format' is {self.format!r}, expected {RESULTS_FORMAT!r}.")
        missing = ["teacher.source"] * ("source" not in self.teacher) + ["dataset.name"] * ("name" not in self.dataset)
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}; see transmamba/model_cards/results.py.")
        for role, value in self.accuracy.items():
            if role not in ROLES:
                raise ValueError(f"{where}: unknown accuracy {role!r}; use {', '.join(ROLES)}.")
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{where}: accuracy.{role} = {value!r} is not a fraction in [0, 1].")

    def measured(self) -> dict[str, float]:
        """The accuracies that were measured (None and absent ones dropped), in `ROLES` order."""
        return {role: value for role in ROLES if (value := self.accuracy.get(role)) is not None}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = RESULTS_NAME) -> RunResults:
        if not isinstance(data, dict):
            raise ValueError(f"{where} holds no JSON object; rerun the command that wrote it.")
        if data.get("format") != RESULTS_FORMAT:
            raise ValueError(f"{where}: 'format' is {data.get('format')!r}, expected {RESULTS_FORMAT!r}.")
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # fmt: skip
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}; see transmamba/model_cards/results.py.")
        results = cls(**{k: v for k, v in data.items() if k in names and k not in ("timings",)},
                      timings=data.get("timings") or {})  # fmt: skip
        results.check(where)
        return results

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/transmamba_results.json`` (checked when built, so a bad file is never written)."""
        path = Path(folder) / RESULTS_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> RunResults:
        """The stored measurements of ``folder``; a folder without them is one clear error."""
        path = Path(folder) / RESULTS_NAME
        if not Path(folder).is_dir():
            raise ValueError(f"{folder} is not a folder; pass a model folder written by `transmamba run` or `train`.")
        if not path.is_file():
            raise ValueError(
                f"{folder} has no {RESULTS_NAME}: a card only states measured results. `transmamba run` and "
                f"`transmamba train` write it next to the model they trained and evaluated."
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); rerun the command that wrote it.") from None
        return cls.from_dict(data, str(path))


def describe_machine() -> str:
    """Cores, CPU model, torch version (and GPU): what two result files must say before their numbers are compared
    (the same run gives other numbers on another CPU, and with another thread count)."""
    import torch

    cpu = _cpu_identity() or platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()}-core {cpu}, torch {torch.__version__}{gpu}"


def _cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """``AMD EPYC (family 25 model 1, AVX2)``: the marketing name alone does not tell two CPU generations apart, and
    the widest vector unit changes how BLAS rounds."""
    try:
        with open(cpuinfo) as info:
            first = info.read().split("\n\n", 1)[0]
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if "model name" not in fields:
        return None
    flags = set(fields.get("flags", "").split())
    vector = next((name.upper() for name in ("avx512f", "avx2", "avx") if name in flags), None)
    generation = (
        f"family {fields['cpu family']} model {fields['model']}" if {"cpu family", "model"} <= set(fields) else None
    )
    details = [detail for detail in (generation, vector) if detail]
    return fields["model name"] + (f" ({', '.join(details)})" if details else "")
