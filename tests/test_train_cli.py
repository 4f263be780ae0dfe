"""`transmamba train` as users run it: --help, bad input, a real 2-process `accelerate launch`, remote-code loading."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from datasets import Value
from exported_code import last_json, run_isolated
from test_train_support import digits, save_student, save_teacher
from transformers import TrainingArguments
from transmamba.trainers.args import DistillationArguments
from transmamba.trainers.train import train

from transmamba import cli

# Runs in a fresh process without our package (exported_code.run_isolated): only the saved folder's code can serve.
FRESH_LOAD = r"""
import json, sys
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(torch.zeros(1, 3, 16, 16)).logits
print(json.dumps({"class": type(model).__name__, "module": type(model).__module__, "shape": list(logits.shape),
                  "size": processor.size["height"]}))
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    return save_teacher(folder / "teacher"), save_student(folder / "student", "vim-t")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_lists_our_options_and_the_training_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--teacher", "--student", "--dataset", "--distillation", "--alpha", "--tau", "--temperature"):
        assert option in text
    for option in ("--lora", "--lora_r", "--max_train_samples", "--image_column", "--label_column", "--output_dir"):
        assert option in text
    assert "train" in cli._usage()


@pytest.mark.parametrize(
    "case, message",
    [
        ("student_size", "student expects 32x32"),
        ("patch", "patch size 8 differs"),
        ("labels", "10 classes but the student has 5 labels"),
        ("no_image", "no image column 'image'"),
        ("no_label", "no label column 'label'"),
        ("not_transmamba", "not a TransMamba model"),
        ("logits_labels", "teacher has 7 labels"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, pair, case, message):
    teacher, student = pair
    data, distillation = digits(), "wsab"
    if case == "student_size":
        student = save_student(tmp_path / "s", image_size=32)
    elif case == "patch":
        teacher = save_teacher(tmp_path / "t", patch_size=8)
    elif case == "labels":
        student = save_student(tmp_path / "s", num_labels=5)
    elif case == "no_image":
        data = data.remove_columns("image")
    elif case == "no_label":
        data = data.cast_column("label", Value("int64")).rename_column("label", "digit")
    elif case == "not_transmamba":
        student = teacher
    elif case == "logits_labels":
        teacher, distillation = save_teacher(tmp_path / "t", num_labels=7), "logits"
    args = DistillationArguments(teacher=teacher, student=student, distillation=distillation)
    training = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1)
    with pytest.raises(ValueError, match=message):
        train(args, training, data)
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


# The first worker to fail was killed by a signal (the launcher's root cause says "exitcode : -6"), not by a Python
# exception (exitcode 1; the other worker's -15 is the launcher stopping it, listed before the root cause).
SIGNAL_DEATH = re.compile(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", re.DOTALL)


def launch(folder: Path, teacher: str, student: str, attempt: int) -> tuple[subprocess.CompletedProcess, str]:
    """One `accelerate launch` of 2 processes; returns the result and each rank's own stderr tail (--tee logs)."""
    logs = folder / f"logs-{attempt}"
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--log_dir", str(logs), "--tee", "3"),
        *("--main_process_port", str(free_port()), "-m", "transmamba.trainers.train"),
        *("--teacher", teacher, "--student", student, "--dataset", str(folder / "digits"), "--use_cpu"),
        *("--max_train_samples", "64", "--max_eval_samples", "16", "--per_device_train_batch_size", "8"),
        *("--num_train_epochs", "1", "--save_strategy", "epoch", "--logging_steps", "1", "--disable_tqdm", "true"),
        *("--output_dir", str(folder / "out")),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONFAULTHANDLER": "1"}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    ranks = "".join(f"\n--- {path.relative_to(logs)}:\n{path.read_text()[-2000:]}"
                    for path in sorted(logs.glob("*/attempt_*/*/stderr.log")))  # fmt: skip
    return result, ranks


@pytest.fixture(scope="module")
def launched(tmp_path_factory, pair):
    """A real 2-process DDP run (gloo, CPU) through `accelerate launch -m transmamba.trainers.train`.

    A worker that dies of a signal inside torch's C++ (gloo aborted a rank once in CI on a loaded 2-core machine,
    never in 24 runs here) gets one more launch, with a warning that carries each rank's log; a Python error
    fails at once."""
    folder = tmp_path_factory.mktemp("ddp")
    digits().save_to_disk(folder / "digits")
    teacher, student = pair
    result, ranks = launch(folder, teacher, student, attempt=0)
    root = SIGNAL_DEATH.search(result.stderr)
    if result.returncode != 0 and root and int(root.group(1)) < 0:
        warnings.warn(f"accelerate launch: a worker died of a signal; launching once more. Rank logs:{ranks}",
                      stacklevel=1)  # fmt: skip
        shutil.rmtree(folder / "out", ignore_errors=True)
        result, ranks = launch(folder, teacher, student, attempt=1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + ranks
    return folder / "out", result.stdout + result.stderr


def test_two_process_accelerate_run_trains_together_and_saves_one_student(launched):
    out, log = launched
    assert "process 0/2" in log and "process 1/2" in log
    # 64 images / (8 per process x 2 processes) = 4 optimizer steps; a single process would need 8.
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-8").exists()
    assert "eval_accuracy" in log
    saved = {path.name for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= saved
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert any("distill_loss/forward" in row for row in state["log_history"])


def test_saved_student_loads_with_trust_remote_code_in_a_fresh_process(launched):
    out, _ = launched
    loaded = last_json(run_isolated(FRESH_LOAD, [out], Path(out).parent))
    assert loaded["class"] == "TransMambaForImageClassification"
    assert loaded["module"].startswith("transformers_modules.")
    assert loaded["shape"] == [1, 10] and loaded["size"] == 16
