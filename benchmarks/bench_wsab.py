"""What WSAB costs per training step: student alone vs student + WSAB + teacher forward, in one run.

Both steps go through the real `DistillationTrainer.training_step` (forward, loss, backward) plus an AdamW step;
the teacher is a DeiT-Tiny-shaped ViT built from its config (no download), the student `pmamba-t`. Times are
medians over a few repeats after one warm-up; the ratios matter, absolute times on a shared machine do not.
Target: WSAB step <= 1.25 x (student step + teacher forward).

    python benchmarks/bench_wsab.py                       # batch 32, 224 px
    python benchmarks/bench_wsab.py --batch 8 --image-size 112 --repeats 2   # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification
from transmamba.modeling_transmamba import TransMambaConfig, TransMambaForImageClassification
from transmamba.modeling_transmamba.selective_scan import resolve_backend
from transmamba.trainers.trainer import DistillationTrainer
from transmamba.trainers.wrapper import DistillationModel, build_distiller

NUM_LABELS = 100
# numba's default OpenMP layer spin-waits after each scan and, measured here, slows the PyTorch ops that follow
# about 5x on a busy CPU; the workqueue layer does not. Both steps run under the same layer either way.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


def deit_tiny_shaped(image_size: int) -> ViTForImageClassification:
    config = ViTConfig(
        image_size=image_size,
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        num_labels=NUM_LABELS,
    )
    return ViTForImageClassification(config)


def median_seconds(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Round-robin over the steps, so load from other processes hits all of them alike."""
    for step in steps.values():
        step()  # warm-up: allocator, kernels, numba compilation
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step(trainer: DistillationTrainer, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by `train()` otherwise

    def step() -> None:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--student", default="pmamba-t")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    torch.manual_seed(0)
    config = TransMambaConfig.from_preset(options.student, image_size=options.image_size, num_labels=NUM_LABELS)
    teacher = deit_tiny_shaped(options.image_size)
    batch = {
        "pixel_values": torch.randn(options.batch, 3, options.image_size, options.image_size),
        "labels": torch.randint(0, NUM_LABELS, (options.batch,)),
    }
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", learning_rate=1e-4)

    def trainer_for(distillation: str) -> DistillationTrainer:
        distiller = build_distiller(distillation, config, teacher.config.hidden_size)
        model = DistillationModel(TransMambaForImageClassification(config), distiller, alpha=0.5)
        return DistillationTrainer(model=model, args=args, teacher=teacher if distiller.needs_teacher else None)

    alone, wsab = trainer_for("none"), trainer_for("wsab")
    backend = resolve_backend(config.scan_backend, torch.device("cpu"))
    print(f"# {options.student} student, DeiT-Tiny-shaped teacher, batch {options.batch}, {options.image_size} px")
    layer = os.environ["NUMBA_THREADING_LAYER"]
    print(f"# scan backend {backend} (numba layer {layer}), {torch.get_num_threads()} threads, ", end="")
    print(f"median of {options.repeats} after 1 warm-up")
    steps = {
        "student": train_step(alone, batch),
        "teacher": lambda: wsab.teacher_outputs(batch["pixel_values"]),
        "wsab": train_step(wsab, batch),
    }
    seconds = median_seconds(steps, options.repeats)
    student_s, teacher_s, wsab_s = seconds["student"], seconds["teacher"], seconds["wsab"]
    print(f"student step (task loss only)      {student_s * 1e3:9.1f} ms")
    print(f"teacher forward (no grad)          {teacher_s * 1e3:9.1f} ms")
    print(f"WSAB step (teacher + student + loss) {wsab_s * 1e3:7.1f} ms")
    print(f"WSAB step / student step                      {wsab_s / student_s:6.3f}x")
    ratio = wsab_s / (student_s + teacher_s)
    verdict = "meets" if ratio <= 1.25 else "misses"
    print(f"WSAB step / (student step + teacher forward)  {ratio:6.3f}x  ({verdict} the 1.25x target)")


if __name__ == "__main__":
    main()
