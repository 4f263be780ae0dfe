"""The model card of a trained (stage 1 + stage 2) student, built only from what was measured.

The card (``README.md``) is a pure function of the folder's `RunResults` (``transmamba_results.json``), so
``transmamba card <folder>`` can regenerate it at any time and a test can check that every number in the card is a
stored one. It states what the numbers say, including a student below scratch or a teacher below the students,
and the teacher-quality gate's verdict (``teacher_gate``) when the run measured it.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..modeling_transmamba.selective_scan import NUMBA_HINT, NUMBA_SPEEDUP
from .results import RESULTS_FORMAT, RESULTS_NAME, ROLES, RunResults  # noqa: F401 - re-exported

RECIPES = {"wsab": "WSAB", "wsab+logits": "WSAB + logits KD", "logits": "logits KD", "feature": "feature KD",
           "none": "task loss only"}  # fmt: skip
PAPER = "https://arxiv.org/abs/2502.15130"
# Every card's usage section says which scan runs where and what numba buys: the same hint the model logs.
KERNELS_NOTE = (
    "The modeling code ships with the weights: pure PyTorch, plus the `mamba_ssm` CUDA kernel on GPU when installed "
    f"and a numba kernel on CPU. On CPU, {NUMBA_HINT.format(speedup=NUMBA_SPEEDUP)} (without numba the model says "
    "so once); the kernel compiles once per machine, about a minute, into `~/.cache/transmamba/numba`."
)

_WSAB = (
    "WSAB, the paper's loss: for every student layer and scan direction, a calibration MLP maps the direction's "
    "mixer output to the teacher's width, the teacher's last-layer tokens are put into that direction's scan "
    "order, and the loss is one minus their cosine similarity; layers that are less aligned get more weight "
    "(softmax over layers)"
)
_KD = "the temperature KD of the frozen teacher head's logits (its soft labels)"
STAGE_TWO = {  # what the card says this model's loss was, beside the task loss
    "wsab": f"the student trains on the task loss plus {_WSAB}.",
    "wsab+logits": f"the student trains on the task loss plus {_WSAB}, plus {_KD}.",
    "logits": f"the student trains on the task loss plus {_KD}.",
    "feature": "the student trains on the task loss plus a loss between its last layer's tokens (through a "
               "calibration MLP) and the teacher's (one minus their cosine, or their MSE: the Distillation row "
               "below says which). The paper's WSAB is `--distillation wsab`; at this project's measured budgets "
               "it was behind this last-layer loss and took 1.5-1.9x the training time (project README, \"Which "
               "default, and why\").",
    "none": "none: the student trains on the task loss only.",
}  # fmt: skip

CITATION = """```bibtex
@article{chen2025transmamba,
  title={TransMamba: Fast Universal Architecture Adaption from Transformers to Mamba},
  author={Chen, Xiuwei and others},
  journal={arXiv preprint arXiv:2502.15130},
  year={2025}
}
```"""


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _metadata(results: RunResults) -> ModelCardData:
    teacher, dataset, student = results.teacher, results.dataset, results.student
    accuracy = results.measured()
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
        model_name=results.model_name,
        base_model=teacher.get("base_model"),
        datasets=[dataset["hub_id"]] if dataset.get("hub_id") else None,
        metrics=["accuracy"],
        library_name="transformers",
        pipeline_tag="image-classification",
        license=results.license,
        tags=tags,
        eval_results=eval_results,
    )


def _teacher_name(teacher: dict) -> str:
    """How the card names the teacher: its Hub id or folder, or what it is when the run trained it."""
    if teacher.get("trained_here") and not teacher.get("base_model"):
        return f"a {teacher.get('class', 'Transformer')} trained by the run"
    return f"`{teacher.get('base_model') or teacher['source']}`"


def _results_table(results: RunResults) -> str:
    accuracy, teacher, budget = results.measured(), results.teacher, results.budget
    steps = f", {budget['steps']} steps" if budget.get("steps") else ""
    named = _teacher_name(teacher)
    kind = f" ({teacher['class']})" if teacher.get("class") and teacher["class"] not in named else ""
    rows = {
        "teacher": f"Teacher: {named}{kind}",
        "scratch": f"Student from scratch (same config, standard init, no distillation{steps})",
        "transmamba": f"This model: subcloned + {_distillation(budget)}{steps}",
    }
    lines = ["| Model | Top-1 |", "|---|---|"]
    lines += [f"| {rows[role]} | {_percent(value)} |" for role, value in accuracy.items()]
    return "\n".join(lines) + _verdict(accuracy) + _gate_line(results)


def _distillation(budget: dict) -> str:
    name = budget.get("distillation") or "wsab"
    return RECIPES.get(name, name)


def _loss_details(budget: dict) -> str:
    """What the loss depends on besides its name: WSAB's layer weighting (``--weighting``) or the feature metric
    (``--feature_metric``; `transmamba run` always uses cosine). Older results files lack both."""
    weighting = budget.get("weighting")
    if weighting and "wsab" in budget["distillation"]:
        return f", {weighting} layer weights"
    return f", {budget.get('feature_metric', 'cosine')}" if budget["distillation"] == "feature" else ""


def _gate_line(results: RunResults) -> str:
    """The teacher-quality gate's verdict, in numbers, under the results table (loud when it failed)."""
    gate = results.teacher_gate
    if not gate:
        return ""
    if gate["passed"]:
        return f"\n\nTeacher-quality gate: passed ({gate['message'].split(': ', 1)[-1]})"
    return f"\n\n**Warning: {gate['message']}**"


def _points(a: float, b: float) -> str:
    return f"{100 * abs(a - b):.2f} points"


def _verdict(accuracy: dict[str, float]) -> str:
    """What the numbers say, in words, whichever way they point."""
    mine, scratch, teacher = accuracy.get("transmamba"), accuracy.get("scratch"), accuracy.get("teacher")
    said = []
    if mine is not None and scratch is not None:
        if mine > scratch:
            said.append(f"This model is {_points(mine, scratch)} above the student trained from scratch.")
        elif mine < scratch:
            said.append(f"This model is {_points(mine, scratch)} **below** the student trained from scratch: at this "
                        "budget, subcloning and distillation did not help.")  # fmt: skip
        else:
            said.append("This model and the student trained from scratch score the same.")
    if teacher is not None and mine is not None:
        students = [v for v in (mine, scratch) if v is not None]
        if teacher < min(students):
            said.append(f"The teacher scores below the student{'s' if len(students) > 1 else ''} "
                        f"({_points(teacher, mine)} below this model).")  # fmt: skip
        elif teacher > mine:
            said.append(f"The teacher is {_points(teacher, mine)} above this model.")
    return "\n\n" + " ".join(said) if said else ""


def _teacher_origin(teacher: dict) -> str:
    if not teacher.get("trained_here"):
        return f"{_teacher_name(teacher)}, frozen"
    steps = f" for {teacher['steps']} steps" if teacher.get("steps") else ""
    return f"a ViT trained by this run{steps} on the same training data from random initialisation, then frozen"


def _facts_table(results: RunResults) -> str:
    """Data and budget, one row per fact that the run recorded."""
    dataset, budget, teacher = results.dataset, results.budget, results.teacher
    student, timings = results.student, results.timings or {}
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
        ("Learning rate", budget.get("learning_rate") and f"{budget['learning_rate']:g}" + (
            f" (x {budget['inherited_lr_scale']:g} for the tensors subcloned from the teacher)"
            if budget.get("inherited_lr_scale", 1) != 1 else "")),
        ("Distillation", budget.get("distillation") and f"{budget['distillation']}{_loss_details(budget)}, "
         f"α = {budget.get('alpha')}"),
        ("SSM init", budget.get("mixer_init")),
        ("Teacher fine-tuning", teacher.get("tuning") and "AdamW lr {learning_rate:g}, warm-up {warmup_ratio:.0%}, "
         "{head_steps} head-only steps first, batch {batch_size}".format(**teacher["tuning"])
         + f", {teacher.get('steps')} steps"),
        ("Seeds", seeds and ", ".join(str(s) for s in seeds)),
        ("Teacher", _teacher_origin(teacher)),
        ("Wall time", timings and ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())),
        ("Machine", results.machine),
        ("Date", results.date),
    ]  # fmt: skip
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts if v])


def _limitations(results: RunResults) -> str:
    budget, teacher, dataset = results.budget, results.teacher, results.dataset
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
    if results.teacher_gate and not results.teacher_gate["passed"]:
        items.append(f"The teacher was not clearly better than a student alone: {results.teacher_gate['message']}")
    accuracy = results.measured()
    weak_teacher = "teacher" in accuracy and accuracy["teacher"] < min(
        [v for k, v in accuracy.items() if k != "teacher"] or [0.0]
    )
    if weak_teacher:
        items.append(
            "The teacher scores below the students on this data, so distillation pulls the student towards a weaker "
            "model; a stronger teacher (or a longer teacher fine-tune) is the first thing to try."
        )
    elif teacher.get("trained_here"):
        items.append(
            "The teacher is a small ViT that this run trained on the same data, not a large pretrained model; the "
            "student can only inherit what that teacher learned."
        )
    items.append(
        "Without the `mamba_ssm` CUDA kernel the selective scan runs in PyTorch (or numba on CPU): correct, but "
        "slower than the kernel."
    )
    return "\n".join(f"- {item}" for item in items)


def _body(results: RunResults) -> str:
    teacher, student, dataset = results.teacher, results.student, results.dataset
    name = _teacher_name(teacher)
    family = student.get("family", "Mamba")
    repo = results.repo_id or "path/to/this/folder"
    eval_split = dataset.get("eval_split", "evaluation")
    evaluated = f"`{eval_split}` split" + (f" ({dataset['eval_size']:,} images)" if dataset.get("eval_size") else "")
    recipe = RECIPES.get(results.budget.get("distillation"), "WSAB")
    stage_two = STAGE_TWO.get(results.budget.get("distillation"), STAGE_TWO["wsab"])
    return f"""
# {results.model_name}

A **TransMamba** vision student ({family}) made from a Transformer teacher ({name}) with
[TransMamba]({PAPER}) (Chen et al., 2025): weight subcloning, then distillation from the teacher ({recipe}).

## Results

Top-1 accuracy on the {dataset["name"]} {evaluated}, measured by the run that made this model. Every
number comes from `{RESULTS_NAME}` in this repository; a model the run did not evaluate has no row.

{_results_table(results)}

## Method

1. **Weight subcloning** (stage 1): the student starts from the teacher — patch embedding, position embeddings,
   both LayerNorms of every block, the MLPs, the final norm, the head, and the attention output projection as the
   mixer's output projection. A narrower student keeps the teacher's most important channels; a shallower one its
   first layers. Only the selective-SSM parameters start from the standard Mamba initialisation.
2. **Distillation** (stage 2): {stage_two}

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


def build_card(results: RunResults) -> ModelCard:
    """Metadata (with a model-index holding this student's measured top-1) and body, from stored results."""
    return ModelCard(f"---\n{_metadata(results).to_yaml()}\n---\n{_body(results)}")


def write_card(folder: str | Path) -> Path:
    """(Re)generate ``folder/README.md`` from ``folder/transmamba_results.json``."""
    card = build_card(RunResults.load(folder))
    path = Path(folder) / "README.md"
    card.save(path)
    return path
