"""The `RunResults` of a `transmamba train` run, so its output folder gets a real card (`transmamba card` works)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..data import dataset_names
from ..model_cards.naming import family_of, hub_id, public_name
from ..model_cards.results import RunResults, describe_machine

SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_directions", "image_size", "patch_size")  # None if n/a


def train_results(args, training_args, trainer, student, teacher_config, sizes: dict, metrics: dict) -> RunResults:
    """``sizes``: train_size, eval_size, num_labels, train_split, eval_split; ``metrics`` from the final evaluate."""
    config = student.config
    base_model = hub_id(args.teacher, args.base_model)
    dataset, dataset_hub, source = dataset_names(args.dataset, args.dataset_name)
    repo = training_args.hub_model_id if training_args.push_to_hub else None
    batch = training_args.per_device_train_batch_size * training_args.world_size
    batch *= training_args.gradient_accumulation_steps
    accuracy = metrics.get("eval_accuracy")
    return RunResults(
        model_name=repo.split("/")[-1] if repo else f"TransMamba {type(student).__name__} ({dataset})",
        teacher={"source": public_name(args.teacher, base_model), "base_model": base_model,
                 "class": (teacher_config.architectures or [teacher_config.model_type])[0], "trained_here": False},
        student={"family": family_of(config), "class": type(student).__name__, "parameters": student.num_parameters(),
                 **{key: getattr(config, key, None) for key in SHAPE_FIELDS}},
        dataset={"name": dataset, "hub_id": dataset_hub, "source": source, **sizes},
        budget={"steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0, 2), "batch_size": batch,
                "learning_rate": training_args.learning_rate, "image_size": config.image_size,
                "seeds": [training_args.seed], "distillation": args.distillation, "alpha": args.alpha,
                "weighting": args.weighting, "feature_metric": args.feature_metric},
        accuracy={"transmamba": round(accuracy, 4) if accuracy is not None else None},
        repo_id=repo,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=describe_machine(),
        command="transmamba train",
    )  # fmt: skip


def save_results(folder: str | Path, results: RunResults) -> None:
    """Results and the card generated from them, next to the student (main process only)."""
    from ..model_cards.card import write_card

    results.save(folder)
    write_card(folder)
