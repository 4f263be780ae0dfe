"""DistillationTrainer on real digits with a real tiny ViT teacher: accumulation, gradients, loss, resume, LoRA."""

from __future__ import annotations

import pytest
import torch
from test_train_support import digits, save_student, save_teacher
from transformers import TrainingArguments
from transmamba.modeling_transmamba import TransMambaForImageClassification
from transmamba.trainers.args import DistillationArguments
from transmamba.trainers.train import train


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def training_args(folder, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(folder),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        eval_strategy="no",
        per_device_eval_batch_size=64,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    return TrainingArguments(**{**values, **overrides})


def distill(teacher, student, data, folder, distillation="wsab", options=None, **training):
    args = DistillationArguments(
        teacher=teacher, student=student, distillation=distillation, max_eval_samples=32, **(options or {})
    )
    return train(args, training_args(folder, **training), data).trainer


def losses(trainer, key="loss") -> dict[int, float]:
    return {row["step"]: row[key] for row in trainer.state.log_history if key in row}


def test_accumulating_4_batches_of_8_equals_one_batch_of_32(tmp_path, teacher, data):
    student = save_student(tmp_path / "student")
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5, options={"max_train_samples": 64, "alpha": 0.5})
    whole = distill(teacher, student, data, tmp_path / "a", "logits", per_device_train_batch_size=32, **common)
    accumulated = distill(
        teacher,
        student,
        data,
        tmp_path / "b",
        "logits",
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        **common,
    )
    start = TransMambaForImageClassification.from_pretrained(student).state_dict()
    one, four = whole.model.student.state_dict(), accumulated.model.student.state_dict()
    moved = max((one[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the step did something
    assert max((one[k] - four[k]).abs().max().item() for k in start) < 1e-5 * max(1.0, moved)
    assert losses(whole)[1] == pytest.approx(losses(accumulated)[1], rel=1e-5)


def test_gradients_reach_student_and_calibration_never_the_teacher(tmp_path, teacher, data):
    student = save_student(tmp_path / "student", "vim-t")
    trainer = distill(teacher, student, data, tmp_path / "out", max_steps=0, options={"max_train_samples": 8})
    model = trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.compute_loss(model, batch).backward()
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert len(list(model.distiller.parameters())) == 2 * 2 * 2  # one calibration MLP (2 Linear) per layer


def test_twenty_steps_on_digits_lower_the_loss(tmp_path, teacher, data):
    student = save_student(tmp_path / "student", "vim-t")
    trainer = distill(
        teacher,
        student,
        data,
        tmp_path / "out",
        options={"max_train_samples": 640},
        num_train_epochs=1,
        per_device_train_batch_size=32,
        logging_steps=4,
        eval_strategy="epoch",
    )
    total, task = losses(trainer), losses(trainer, "task_loss")
    assert sorted(total) == [4, 8, 12, 16, 20]
    assert total[20] < total[4] - 0.2
    assert task[20] < task[4]
    rows = [r for r in trainer.state.log_history if "loss" in r]
    compact = {"layer_weight_max/forward", "layer_weight_argmax/backward", "layer_weight_entropy/forward"}
    assert {"distill_loss/forward", "distill_loss/backward"} | compact <= set(rows[0])
    assert not any(k.startswith("layer_weight/") for k in rows[0])  # the full weights only now and then
    last = rows[-1]  # ... and in the last log, where the summary can be checked against them
    full = [last[f"layer_weight/forward/{i}"] for i in range(2)]
    assert last["layer_weight_max/forward"] == pytest.approx(max(full), abs=1e-4)
    assert last["layer_weight_argmax/forward"] == full.index(max(full))
    assert any("eval_accuracy" in r for r in trainer.state.log_history)
    saved = TransMambaForImageClassification.from_pretrained(tmp_path / "out")
    assert not any("calibration" in k for k in saved.state_dict())
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    assert (tmp_path / "out" / "README.md").is_file()


def test_resume_reproduces_the_uninterrupted_run(tmp_path, teacher, data):
    student = save_student(tmp_path / "student")
    common = dict(max_steps=6, per_device_train_batch_size=8, save_strategy="steps", save_steps=3, seed=3)
    options = {"max_train_samples": 64}
    straight = distill(teacher, student, data, tmp_path / "a", options=options, **common)
    resumed = distill(
        teacher,
        student,
        data,
        tmp_path / "b",
        options=options,
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"),
        **common,
    )
    expected, actual = losses(straight), losses(resumed)
    assert {4, 5, 6} <= set(actual)
    for step in (4, 5, 6):
        assert actual[step] == pytest.approx(expected[step], rel=1e-6)
    assert losses(resumed, "layer_weight/rows/0")[6] == pytest.approx(losses(straight, "layer_weight/rows/0")[6])


def test_lora_trains_adapters_and_head_only_and_merges(tmp_path, teacher, data):
    student = save_student(tmp_path / "student")
    start = TransMambaForImageClassification.from_pretrained(student).state_dict()
    trainer = distill(
        teacher,
        student,
        data,
        tmp_path / "out",
        options={"lora": True, "lora_r": 2, "max_train_samples": 32},
        max_steps=3,
        per_device_train_batch_size=8,
    )
    peft_student = trainer.model.student
    trainable = [n for n, p in peft_student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier.modules_to_save" in n for n in trainable)
    assert any("mixer.out_proj.lora_A" in n for n in trainable) and any("mlp.fc1.lora_B" in n for n in trainable)
    base = peft_student.get_base_model()
    frozen = base.transmamba.layers[0].mixer.in_proj.base_layer.weight
    assert torch.equal(frozen, start["transmamba.layers.0.mixer.in_proj.weight"])
    merged = TransMambaForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert not any("lora" in k or "modules_to_save" in k for k in merged.state_dict())
    assert not torch.equal(merged.state_dict()["transmamba.layers.0.mixer.in_proj.weight"], frozen)
    pixels = trainer.train_dataset[0]["pixel_values"][None]
    with torch.no_grad():
        expected = peft_student.eval()(pixel_values=pixels).logits
        assert torch.allclose(merged(pixel_values=pixels).logits, expected, atol=1e-5)


def test_subcloned_tensors_train_at_the_scaled_learning_rate(tmp_path, teacher, data):
    """The tensors the report says came from the teacher get lr x inherited_lr_scale, the others the full lr."""
    import json

    student = save_student(tmp_path / "student", "vim-t")
    names = list(TransMambaForImageClassification.from_pretrained(student).state_dict())
    inherited = {name for name in names if ".mlp." in name or "embeddings" in name}
    report = {"tensors": {name: {"status": "copied" if name in inherited else "initialised"} for name in names}}
    (tmp_path / "student" / "subcloning_report.json").write_text(json.dumps(report))
    trainer = distill(teacher, student, data, tmp_path / "out", options={"max_train_samples": 64,
                      "inherited_lr_scale": 0.25}, max_steps=1, per_device_train_batch_size=32)  # fmt: skip
    by_id = {id(p): n.removeprefix("student.") for n, p in trainer.model.named_parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        group_names = {by_id[id(p)] for p in group["params"]}
        expected = 1e-2 * (0.25 if group_names <= inherited else 1.0)
        assert group_names <= inherited or not group_names & inherited  # never mixed
        assert group["initial_lr"] == pytest.approx(expected)
        seen |= group_names
    assert inherited <= seen and len(seen) == len(set(by_id.values()))
