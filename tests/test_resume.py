"""Interrupted work, with a real SIGKILL: `transmamba train` resumes from its newest complete checkpoint (an
incomplete one is skipped with a message), and `transmamba run`'s transformers-native teacher stage resumes through
the library's loading path, so the resumed teacher equals the uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_train_support import digits, save_student, save_teacher
from transmamba.trainers.checkpoints import STATE, resolve_resume

from transmamba.cli import main as cli_main

ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSMAMBA_SCAN_BACKEND": "sequential"}


def _kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the process ended before it could be killed"


def test_killed_train_resumes_from_the_newest_complete_checkpoint(tmp_path):
    teacher, student = save_teacher(tmp_path / "teacher"), save_student(tmp_path / "student")
    data = digits(test_size=16)
    data["train"] = data["train"].select(range(96))
    data.save_to_disk(tmp_path / "data")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "transmamba.trainers.train", "--teacher", teacher, "--student", student,
               "--dataset", str(tmp_path / "data"), "--output_dir", str(out), "--use_cpu", "--max_steps", "12",
               "--per_device_train_batch_size", "8", "--save_steps", "2", "--eval_strategy", "no",
               "--disable_tqdm", "true", "--seed", "1", "--logging_steps", "1"]  # fmt: skip
    env = {**os.environ, **ENV}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill right after a second checkpoint folder appears: most often before its trainer_state.json is written.
    _kill_when(first, lambda: len(list(out.glob("checkpoint-*"))) >= 2)
    states = {path.name: (path / STATE).is_file() for path in out.glob("checkpoint-*")}
    complete = sorted((int(name.split("-")[1]) for name, done in states.items() if done), reverse=True)
    assert complete, states
    assert not (out / "model.safetensors").exists()  # killed before the end: no final student

    with pytest.raises(ValueError, match="is incomplete|does not exist"):
        resolve_resume(out, str(out / "checkpoint-999"))
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {out / f'checkpoint-{complete[0]}'}" in second.stderr
    for name, done in states.items():
        if not done:
            assert f"skipping {out / name}: incomplete" in second.stderr
    assert f"saved the student to {out}" in second.stdout
    final = json.loads((out / "checkpoint-12" / STATE).read_text())
    assert final["global_step"] == 12
    steps = [row["step"] for row in final["log_history"] if "loss" in row]
    assert steps and min(steps) <= complete[0]  # the resumed run carries the earlier log
    results = json.loads((out / "transmamba_results.json").read_text())
    assert cli_main(["card", str(out)]) == 0  # a real card, rebuilt from the stored numbers
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results[0].metric_value == results["accuracy"]["transmamba"] is not None
    assert str(tmp_path) not in card.content


def test_killed_teacher_stage_resumes_with_the_library_key_mapping(tmp_path):
    """The ViT teacher's checkpoints carry transformers' saved key names; a resume that skipped the library's key
    mapping would restart the encoder from init, and the resumed teacher would differ from the uninterrupted one."""
    from transmamba import run_stages
    from transmamba.run_args import RunArguments

    tiny = dict(dataset="digits", train_size=128, eval_size=32, image_size=16, patch_size=4, teacher_width=32,
                teacher_layers=2, teacher_steps=16, save_steps=4, batch_size=16, steps=4)  # fmt: skip
    killed_work = tmp_path / "killed"
    argv = [f"--{key}={value}" for key, value in tiny.items()]
    command = [sys.executable, "-m", "transmamba.cli", "run", *argv, "--teacher", "small-vit", "--work_dir",
               str(killed_work)]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=tmp_path)  # fmt: skip
    checkpoints = killed_work / "teacher" / "all" / "checkpoints"  # the teacher stage's "train all" phase
    _kill_when(process, lambda: any(checkpoints.glob(f"checkpoint-*/{STATE}")))
    assert not (killed_work / "teacher" / "stage.json").exists()

    data = json.loads((killed_work / "data" / "stage.json").read_text())["outputs"]
    killed = RunArguments(**tiny, work_dir=killed_work, teacher=None)  # None: the small ViT, as `run` resolves it
    run_stages.stage_teacher(killed_work / "teacher", killed, data)  # resumes from the checkpoint
    straight_work = tmp_path / "straight"
    (straight_work / "teacher").mkdir(parents=True)
    os.symlink(killed_work / "data", straight_work / "data")
    run_stages.stage_teacher(
        straight_work / "teacher", RunArguments(**tiny, work_dir=straight_work, teacher=None), data
    )

    resumed = load_file(killed_work / "teacher" / "model" / "model.safetensors")
    straight = load_file(straight_work / "teacher" / "model" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-5, msg=key)


def test_resume_option_meanings(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / STATE).write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()  # killed while saving
    for step, cut in ((6, ""), (8, '{"global_step": 8, "log_hist')):  # killed while writing the state itself
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE).write_text(cut)
    assert resolve_resume(tmp_path, None) == str(tmp_path / "checkpoint-2")
    assert resolve_resume(tmp_path, "last") == str(tmp_path / "checkpoint-2")
    assert resolve_resume(tmp_path, "True") == str(tmp_path / "checkpoint-2")
    assert resolve_resume(tmp_path, "no") is None
    for step in (4, 6, 8):
        expected = f"checkpoint-{step} is incomplete .* the newest complete one is .*checkpoint-2"
        with pytest.raises(ValueError, match=expected):
            resolve_resume(tmp_path, str(tmp_path / f"checkpoint-{step}"))
    assert resolve_resume(tmp_path / "fresh", None) is None


def test_a_pretrained_teacher_gets_the_same_new_head_in_every_process(tmp_path):
    """torch seeds each process differently, so a teacher whose head is new (here 3 labels, the data has 10) must be
    seeded before the head is built: two fresh processes, one stage each, give the same fine-tuned teacher."""
    from transmamba import run_stages
    from transmamba.run_args import RunArguments

    teacher = save_teacher(tmp_path / "teacher", num_labels=3)
    data_set = digits(test_size=16)
    data_set["train"] = data_set["train"].select(range(32))
    data_set.save_to_disk(tmp_path / "digits")
    tiny = dict(dataset=str(tmp_path / "digits"), train_size=32, eval_size=16, teacher_steps=2, batch_size=16,
                steps=2, teacher=teacher)  # fmt: skip
    (tmp_path / "work" / "data").mkdir(parents=True)
    data, _ = run_stages.stage_data(tmp_path / "work" / "data", RunArguments(**tiny, work_dir=tmp_path / "work"),
                                    tiny["dataset"])  # fmt: skip
    script = (
        "import json, sys; from pathlib import Path; from transmamba import run_stages; "
        "from transmamba.run_args import RunArguments; "
        "run_stages.stage_teacher(Path(sys.argv[1]), RunArguments(**json.loads(sys.argv[2])), json.loads(sys.argv[3]))"
    )
    weights = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        args = json.dumps({**tiny, "work_dir": str(tmp_path / "work")})
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / run), args, json.dumps(data)],
                              env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        weights.append(load_file(tmp_path / run / "model" / "model.safetensors"))
    assert weights[0]["classifier.weight"].shape == (10, 32)
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
