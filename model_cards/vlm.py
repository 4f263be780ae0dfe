"""The model card of a distilled TransLlavaMamba, built from what `benchmarks/table3.py` measured: the exact match
on the held-out questions (`transmamba.vqa_eval`, our GQA/VQA stand-in) goes into ``model-index``."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .card import CITATION
from .stage1 import GEMMA_NOTICE

DATASET = "Fashion-MNIST questions (transmamba.vqa_eval, held-out test images)"
BODY = """
# {title}

A **TransLlavaMamba** vision-language model: LLaVA's vision tower and projector with a Mamba language model,
subcloned from the LLaVA teacher `{teacher}` ({student_layers} of its {teacher_layers} language-model layers)
and distilled with `transmamba train-vlm` (answer-token KD + layer features) — Trans-LLaVA of
[TransMamba](https://arxiv.org/abs/2502.15130) (Chen et al., 2025), on a CPU budget.

## Measured (held-out questions, exact match)

{table}

The questions are templated ("What is the item in the image?", "Is this a sneaker?", "Is the item upper-body
clothing?", "Which kind of item is it: ...?") about Fashion-MNIST test images; answers are compared after
normalisation (see `transmamba/vqa_eval.py`). This is a stand-in: GQA, VQAv2, VizWiz and ScienceQA (the paper's
Table 3) were not available offline, so none of them was measured. Budget: {budget}. Machine: {machine}.

## How to load

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
```
{notice}
## Citation

{citation}
"""


def build_vlm_card(rows: dict[str, dict], student: str, teacher: str, facts: dict) -> ModelCard:
    """``rows``: table3's rows (name -> {"eval": score(...), "budget": str}); ``student``: the row of this model;
    ``facts``: teacher_layers, student_layers, machine, repo (Hub id or folder), gemma (bool)."""
    if "eval" not in rows.get(student, {}):
        raise ValueError(f"No measured exact match for {student!r}: evaluate it before writing its card.")
    accuracy = rows[student]["eval"]["exact_match"]
    metadata = ModelCardData(
        model_name=f"TransLlavaMamba ({student})",
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        license="gemma" if facts.get("gemma") else None,
        tags=["transmamba", "mamba", "vision-language", "llava", "distillation", "subcloning"],
        metrics=["exact_match"],
        eval_results=[
            EvalResult(
                task_type="visual-question-answering",
                task_name="Visual question answering (our GQA/VQA stand-in)",
                dataset_type="fashion_mnist",
                dataset_name=DATASET,
                dataset_split="test",
                metric_type="exact_match",
                metric_name="Exact match",
                metric_value=accuracy,
            )
        ],
    )
    lines = ["| model | exact match | budget |", "|---|---|---|"]
    for name, row in rows.items():
        if "eval" in row:
            lines.append(f"| {name}{' (this model)' * (name == student)} | {100 * row['eval']['exact_match']:.1f} % "
                         f"| {row.get('budget', '-')} |")  # fmt: skip
    body = BODY.format(
        title=metadata.model_name, teacher=teacher, table="\n".join(lines), budget=rows[student].get("budget", "-"),
        machine=facts.get("machine", "-"), repo=facts.get("repo", "."), citation=CITATION,
        student_layers=facts.get("student_layers", "?"), teacher_layers=facts.get("teacher_layers", "?"),
        notice=f"\n{GEMMA_NOTICE}(See `NOTICE`.)\n" if facts.get("gemma") else "",
    )  # fmt: skip
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
