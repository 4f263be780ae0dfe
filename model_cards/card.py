"""The model card of a trained (stage 1 + stage 2) student, built only from what a run measured.

A run stores its measurements in ``transmamba_results.json`` in the model folder; the card (``README.md``) is a
pure function of that file, so ``transmamba card <folder>`` can regenerate it at any time and a test can check
that every number in the card is a stored one. Schema (``format: transmamba-results/1``; accuracies are fractions
in [0, 1]; a key that was not measured is left out or null, and then it is left out of the card too):

.. code-block:: text

    format        "transmamba-results/1"
    model_name    str                      title of the card and model-index name
    license       str | null               the student's license (inherited from the teacher / data)
    teacher       {source, base_model (Hub id | null), class, trained_here (bool), steps}
    student       {spec, family, class, parameters, hidden_size, num_hidden_layers, num_directions,
                   image_size, patch_size}
    dataset       {name, hub_id (str | null), source, train_split, eval_split, train_size, eval_size, num_labels}
    budget        {steps, epochs, batch_size, learning_rate, image_size, seeds, distillation, alpha}
    accuracy      {teacher, scratch, transmamba}
    teacher_gate  optional {teacher_top1, scratch_top1, margin_points, required_margin_points, passed, message}
    timings       {stage name: seconds}
    date          ISO-8601 UTC time the results were written
    machine       str (e.g. "2 CPU cores, torch 2.13.0+cpu")
    repo_id       str | null               Hub repo the folder is pushed to (used in the loading snippet)
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..modeling_transmamba.selective_scan import NUMBA_HINT, NUMBA_SPEEDUP

RESULTS_NAME = "transmamba_results.json"
RESULTS_FORMAT = "transmamba-results/1"
ROLES = ("teacher", "scratch", "transmamba")
RECIPES = {"wsab": "WSAB", "wsab+logits": "WSAB + logits KD", "logits": "logits KD", "feature": "feature KD",
           "none": "task loss only"}  # fmt: skip
PAPER = "https://arxiv.org/abs/2502.15130"
# Every card's usage section says which scan runs where and what numba buys: the same hint the model logs.
KERNELS_NOTE = (
    "The modeling code ships with the weights: pure PyTorch, plus the `mamba_ssm` CUDA kernel on GPU when installed "
    f"and a numba kernel on CPU. On CPU, {NUMBA_HINT.format(speedup=NUMBA_SPEEDUP)} (without numba the model says "
    "so once); the kernel compiles once per machine, about a minute, into `~/.cache/transmamba/numba`."
)

CITATION = """```bibtex
@article{chen2025transmamba,
  title={TransMamba: Fast Universal Architecture Adaption from Transformers to Mamba},
  author={Chen, Xiuwei and others},
  journal={arXiv preprint arXiv:2502.15130},
  year={2025}
}
```"""


def _check(results: dict, where: str) -> dict:
    """The keys the card cannot do without, and accuracies that are fractions; one ValueError naming the fix."""
    if results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{where}: 'format' is {results.get('format')!r}, expected {RESULTS_FORMAT!r}.")
    missing = [
        key for key in ("model_name", "teacher", "student", "dataset", "budget", "accuracy") if key not in results
    ]
    missing += ["teacher.source"] * ("source" not in results.get("teacher", {}))
    missing += ["dataset.name"] * ("name" not in results.get("dataset", {}))
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; see the schema in transmamba/model_cards/card.py.")
    for role, value in results["accuracy"].items():
        if role not in ROLES:
            raise ValueError(f"{where}: unknown accuracy {role!r}; use {', '.join(ROLES)}.")
        if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise ValueError(f"{where}: accuracy.{role} = {value!r} is not a fraction in [0, 1].")
    return results


def write_results(folder: str | Path, results: dict) -> Path:
    """Store a run's measurements next to its model (checked first, so a bad file is never written)."""
    path = Path(folder) / RESULTS_NAME
    _check(results, str(path))
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def load_results(folder: str | Path) -> dict:
    """The stored measurements of ``folder``; a folder without them is one clear error."""
    path = Path(folder) / RESULTS_NAME
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} is not a folder; pass the model folder written by `transmamba run`.")
    if not path.is_file():
        raise ValueError(
            f"{folder} has no {RESULTS_NAME}: a card only states measured results. Run `transmamba run` to train and "
            f"evaluate a student (it writes {RESULTS_NAME}), or write the file by the schema in "
            "transmamba/model_cards/card.py."
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rerun `transmamba run` to rewrite it.") from None
    return _check(results, str(path))


def measured(results: dict) -> dict[str, float]:
    """The accuracies that were measured (None and absent ones dropped)."""
    return {role: value for role in ROLES if (value := results["accuracy"].get(role)) is not None}


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _metadata(results: dict) -> ModelCardData:
    teacher, dataset, student = results["teacher"], results["dataset"], results["student"]
    accuracy = measured(results)
    eval_results = None
    if "transmamba" in accuracy:
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset.get("hub_id") or dataset["name"],
                dataset_name=dataset["name"],
                dataset_split=dataset.get("eval_split"),
                metric_type="accuracy",
                metric_name="Top-1 accuracy",
                metric_value=accuracy["transmamba"],
            )
        ]
    family = student.get("family")
    tags = ["transmamba", "mamba", "vision", "image-classification", "distillation", "subcloning", "wsab"]
    tags += [family.lower()] * bool(family)
    return ModelCardData(
        model_name=results["model_name"],
        base_model=teacher.get("base_model"),
        datasets=[dataset["hub_id"]] if dataset.get("hub_id") else None,
        metrics=["accuracy"],
        library_name="transformers",
        pipeline_tag="image-classification",
        license=results.get("license"),
        tags=tags,
        eval_results=eval_results,
    )


def _teacher_name(teacher: dict) -> str:
    """How the card names the teacher: its Hub id or folder, or what it is when the run trained it."""
    if teacher.get("trained_here") and not teacher.get("base_model"):
        return f"a {teacher.get('class', 'Transformer')} trained by the run"
    return f"`{teacher.get('base_model') or teacher['source']}`"


def _results_table(results: dict) -> str:
    accuracy, teacher, budget = measured(results), results["teacher"], results["budget"]
    steps = f", {budget['steps']} steps" if budget.get("steps") else ""
    named = _teacher_name(teacher)
    kind = f" ({teacher['class']})" if teacher.get("class") and teacher["class"] not in named else ""
    rows = {
        "teacher": f"Teacher: {named}{kind}",
        "scratch": f"Student from scratch (same config, standard init, no distillation{steps})",
        "transmamba": f"**This model**: subcloned + {RECIPES.get(budget.get('distillation'), 'WSAB')}{steps}",
    }
    lines = ["| Model | Top-1 |", "|---|---|"]
    lines += [f"| {rows[role]} | {_percent(value)} |" for role, value in accuracy.items()]
    return "\n".join(lines) + _gate_line(results)


def _gate_line(results: dict) -> str:
    """The teacher-quality gate's verdict, in numbers, under the results table (loud when it failed)."""
    gate = results.get("teacher_gate")
    if not gate:
        return ""
    if gate["passed"]:
        return f"\n\nTeacher-quality gate: passed ({gate['message'].split(': ', 1)[-1]})"
    return f"\n\n**Warning: {gate['message']}**"


def _teacher_origin(teacher: dict) -> str:
    if not teacher.get("trained_here"):
        return f"{_teacher_name(teacher)}, frozen"
    steps = f" for {teacher['steps']} steps" if teacher.get("steps") else ""
    return f"a ViT trained by this run{steps} on the same training data from random initialisation, then frozen"


def _facts_table(results: dict) -> str:
    """Data and budget, one row per fact that the run recorded."""
    dataset, budget, teacher = results["dataset"], results["budget"], results["teacher"]
    student, timings = results["student"], results.get("timings") or {}
    seeds = budget.get("seeds")
    epochs = f" ({budget['epochs']:g} epochs)" if budget.get("epochs") else ""
    facts = [
        ("Dataset", f"{dataset['name']}" + (f" ({dataset['source']})" if dataset.get("source") else "")),
        ("Training images", dataset.get("train_size") and f"{dataset['train_size']:,} (`{dataset['train_split']}`)"),
        ("Evaluation images", dataset.get("eval_size") and f"{dataset['eval_size']:,} (`{dataset['eval_split']}`)"),
        ("Image size", budget.get("image_size") and f"{budget['image_size']} px"),
        ("Student", student.get("spec") and f"`{student['spec']}`"),
        ("Student layers / width / scan directions", student.get("hidden_size") and
         f"{student['num_hidden_layers']} / {student['hidden_size']} / {student['num_directions']}"),
        ("Parameters", student.get("parameters") and f"{student['parameters']:,}"),
        ("Training steps (each student)", budget.get("steps") and f"{budget['steps']}{epochs}"),
        ("Batch size", budget.get("batch_size")),
        ("Learning rate", budget.get("learning_rate")),
        ("Distillation", budget.get("distillation") and f"{budget['distillation']}, α = {budget.get('alpha')}"),
        ("SSM init", budget.get("mixer_init")),
        ("Teacher fine-tuning", teacher.get("tuning") and "AdamW lr {learning_rate:g}, warm-up {warmup_ratio:.0%}, "
         "{head_steps} head-only steps first, batch {batch_size}".format(**teacher["tuning"])
         + f", {teacher.get('steps')} steps"),
        ("Seeds", seeds and ", ".join(str(s) for s in seeds)),
        ("Teacher", _teacher_origin(teacher)),
        ("Wall time", timings and ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())),
        ("Machine", results.get("machine")),
        ("Date", results.get("date")),
    ]  # fmt: skip
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts if v])


def _limitations(results: dict) -> str:
    budget, teacher, dataset = results["budget"], results["teacher"], results["dataset"]
    items = [
        f"Trained and evaluated on {dataset['name']} only "
        f"({dataset.get('num_labels', 'its')} classes"
        + (f", {budget['image_size']} px images" if budget.get("image_size") else "")
        + "): it classifies those classes and nothing else; it is not a general-purpose backbone.",
        "A small training budget, chosen to show the method end to end on a CPU; the numbers above are not the "
        "paper's (ImageNet, 300 epochs) and should not be compared with them.",
    ]
    if len(budget.get("seeds") or []) <= 1:
        items.append("One seed: differences of about a point between the rows above can be noise.")
    if results.get("teacher_gate") and not results["teacher_gate"]["passed"]:
        items.append(f"The teacher was not clearly better than a student alone: {results['teacher_gate']['message']}")
    if teacher.get("trained_here"):
        items.append(
            "The teacher is a small ViT that this run trained on the same data, not a large pretrained model; the "
            "student can only inherit what that teacher learned."
        )
    items.append(
        "Without the `mamba_ssm` CUDA kernel the selective scan runs in PyTorch (or numba on CPU): correct, but "
        "slower than the kernel."
    )
    return "\n".join(f"- {item}" for item in items)


def _body(results: dict) -> str:
    teacher, student, dataset = results["teacher"], results["student"], results["dataset"]
    name = _teacher_name(teacher)
    family = student.get("family", "Mamba")
    repo = results.get("repo_id") or "path/to/this/folder"
    eval_split = dataset.get("eval_split", "evaluation")
    evaluated = f"`{eval_split}` split" + (f" ({dataset['eval_size']:,} images)" if dataset.get("eval_size") else "")
    recipe = RECIPES.get(results["budget"].get("distillation"), "WSAB")
    return f"""
# {results["model_name"]}

A **TransMamba** vision student ({family}) made from a Transformer teacher ({name}) with both stages of
[TransMamba]({PAPER}) (Chen et al., 2025): weight subcloning, then adaptive bidirectional distillation (WSAB).

## Results

Top-1 accuracy on the {dataset["name"]} {evaluated}, measured by the run that made this model. Every
number comes from `{RESULTS_NAME}` in this repository; a model the run did not evaluate has no row.

{_results_table(results)}

## Method

1. **Weight subcloning** (stage 1): the student starts from the teacher — patch embedding, position embeddings,
   both LayerNorms of every block, the MLPs, the final norm, the head, and the attention output projection as the
   mixer's output projection. A narrower student keeps the teacher's most important channels; a shallower one its
   first layers. Only the selective-SSM parameters start from the standard Mamba initialisation.
2. **WSAB** (stage 2): the student trains on the task loss plus a distillation loss against the frozen teacher:
   for every student layer and scan direction, a calibration MLP maps the direction's mixer output to the
   teacher's width, the teacher's last-layer tokens are put into that direction's scan order, and the loss is
   one minus their cosine similarity; layers that are less aligned get more weight (softmax over layers).
   This model's loss: {recipe} (`wsab+logits` adds the temperature KD of the teacher head's logits to WSAB).

The scratch student has the same configuration and training steps, standard initialisation and the task loss
only.

## Data and budget

{_facts_table(results)}

## How to load

```python
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True)
classifier = pipeline("image-classification", model="{repo}", trust_remote_code=True)
```

{KERNELS_NOTE} `trust_remote_code=True` runs that code: read it first.

## Limitations

{_limitations(results)}

## Citation

{CITATION}
"""


def build_card(results: dict) -> ModelCard:
    """Metadata (with a model-index holding this student's measured top-1) and body, from stored results."""
    _check(results, RESULTS_NAME)
    return ModelCard(f"---\n{_metadata(results).to_yaml()}\n---\n{_body(results)}")


def write_card(folder: str | Path) -> Path:
    """(Re)generate ``folder/README.md`` from ``folder/transmamba_results.json``."""
    card = build_card(load_results(folder))
    path = Path(folder) / "README.md"
    card.save(path)
    return path
