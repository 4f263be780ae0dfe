"""`transmamba run` on a cut-down budget: a real SIGKILL mid-training, a resume that skips finished stages, and a
model folder that loads in a fresh process (no project, offline) and scores exactly what its card says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exported_code import last_json, run_isolated
from huggingface_hub import ModelCard
from transmamba.model_cards.card import RESULTS_NAME

from transmamba.run import main as run_main

# Tiny but complete: digits (embedded) at 16 px, a 2-layer width-32 ViT teacher, 2-layer PlainMamba students.
TINY = ["--teacher", "small-vit",
        "--dataset", "digits", "--train-size", "256", "--eval-size", "96", "--image-size", "16", "--patch-size", "4",
        "--teacher-width", "32", "--teacher-layers", "2", "--teacher-steps", "30", "--steps", "60",
        "--save-steps", "10", "--batch-size", "16"]  # fmt: skip
RESUMED = ["data", "teacher", "convert", "teacher_outputs", "scratch", "gate"]

# Runs in a fresh process without our package (exported_code.run_isolated): the folder must carry its own code.
# It recomputes top-1 on the run's stored evaluation images.
CHILD = r"""
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
data = load_file(sys.argv[2])
with torch.no_grad():
    predicted = model(pixel_values=data["eval_pixels"]).logits.argmax(-1)
classifier = pipeline("image-classification", model=sys.argv[1], trust_remote_code=True)
from PIL import Image
top = classifier(Image.new("RGB", (8, 8), (255, 255, 255)), top_k=1)
package = type(model).__module__.rsplit(".", 1)[0]
print(json.dumps({"module": type(model).__module__, "label": top[0]["label"],
                  "backends": sorted(sys.modules[package + ".selective_scan"]._announced),
                  "accuracy": round((predicted == data["eval_labels"]).float().mean().item(), 4)}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "OMP_NUM_THREADS": "1",
    }


def _complete_checkpoint(work: Path) -> bool:
    return any((work / "transmamba" / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def test_killed_run_resumes_and_leaves_a_loadable_folder_with_a_true_card(tmp_path):
    work = tmp_path / "work"
    command = [sys.executable, "-m", "transmamba.cli", "run", *TINY, "--work-dir", str(work)]
    env = {**_env(tmp_path), **{k: v for k, v in os.environ.items() if k in ("HOME", "VIRTUAL_ENV")}}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.monotonic() + 240
        while not _complete_checkpoint(work) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert "using 256 training / 96 test images of 1437 / 360" in (tmp_path / "first.log").read_text()
    assert all((work / stage / "stage.json").is_file() for stage in RESUMED)
    assert not (work / "transmamba" / "stage.json").exists()  # killed mid-training: not marked done
    assert not (work / "model").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    for stage in RESUMED:
        assert f"{stage}: done in an earlier run (inputs unchanged), skipped" in log
    assert "resuming from checkpoint-" in log and "transmamba: done in" in log

    folder = work / "model"
    results = json.loads((folder / RESULTS_NAME).read_text())
    assert set(results["accuracy"]) == {"teacher", "scratch", "transmamba"}
    assert results["dataset"]["name"] == "digits" and results["budget"]["steps"] == 60
    gate = results["teacher_gate"]  # measured before distillation, on the same held-out images
    accuracy = results["accuracy"]
    assert (gate["teacher_top1"], gate["scratch_top1"]) == (accuracy["teacher"], accuracy["scratch"])
    assert results["budget"]["distillation"] == "feature" and results["teacher"]["tuning"]["learning_rate"] == 1e-3
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results[0].metric_value == results["accuracy"]["transmamba"]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
    for value in results["accuracy"].values():
        assert f"| {100 * value:.2f} % |" in card.text
    assert ("Teacher-quality gate: passed" in card.text) is gate["passed"]
    assert ("**Warning: teacher-quality gate FAILED" in card.text) is not gate["passed"]

    loaded = last_json(run_isolated(CHILD, [folder, work / "data" / "pixels.safetensors"], tmp_path))
    assert loaded["module"].startswith("transformers_modules.") and loaded["backends"] == ["numba"]
    assert loaded["label"] in [str(i) for i in range(10)]
    assert loaded["accuracy"] == results["accuracy"]["transmamba"]  # the folder is the model that was evaluated


def test_bad_input_fails_before_any_stage(tmp_path, capsys):
    work = tmp_path / "work"
    assert run_main(["--steps", "0", "--work-dir", str(work)]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert run_main(["--teacher", "small-vit", "--image-size", "30", "--patch-size", "4", "--work-dir", str(work)]) == 2
    assert "multiple of --patch-size" in capsys.readouterr().err
    assert run_main(["--dry-run", "--work-dir", str(work)]) == 2
    assert "pass --push-to-hub" in capsys.readouterr().err
    assert not work.exists()


def test_stage_markers_skip_only_finished_unchanged_stages(tmp_path):
    from transmamba.stages import Stages

    calls = []

    def work(directory: Path) -> tuple[dict, list[str]]:
        calls.append(directory.name)
        (directory / "out.txt").write_text("x")
        return {"n": len(calls)}, ["out.txt"]

    assert Stages(tmp_path, ["a"]).run("a", "first", {"k": 1}, work) == {"n": 1}
    assert Stages(tmp_path, ["a"]).run("a", "same inputs", {"k": 1}, work) == {"n": 1}  # replayed, not rerun
    assert Stages(tmp_path, ["a"]).run("a", "new inputs", {"k": 2}, work) == {"n": 2}
    (tmp_path / "a" / "out.txt").unlink()
    assert Stages(tmp_path, ["a"]).run("a", "output gone", {"k": 2}, work) == {"n": 3}

    def killed(directory: Path) -> tuple[dict, list[str]]:
        (directory / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    try:
        Stages(tmp_path, ["b"]).run("b", "dies", {"k": 1}, killed)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "b" / "stage.json").exists()
    Stages(tmp_path, ["b"]).run("b", "resumes with its partial state", {"k": 1}, work)
    assert (tmp_path / "b" / "partial.txt").exists()  # same inputs: the partial state is kept for resuming
    assert calls == ["a", "a", "a", "b"]


def test_a_stage_another_live_process_runs_is_refused(tmp_path):
    from transmamba import stages
    from transmamba.stages import STARTED, Stages

    def started_by(owner: dict) -> None:
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / STARTED).write_text(json.dumps({"inputs_hash": "other inputs", "owner": owner}))
        (tmp_path / "a" / "checkpoint.bin").write_text("the other process's")

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for _ in range(100):  # until its /proc entry is readable
            if stages._process_start(other.pid) is not None:
                break
            time.sleep(0.05)
        owner = {"pid": other.pid, "host": stages.socket.gethostname(),
                 "process_start": stages._process_start(other.pid)}  # fmt: skip
        started_by(owner)
        with pytest.raises(ValueError, match=rf"another process \(pid {other.pid}\).*--work-dir"):
            Stages(tmp_path, ["a"]).run("a", "second process", {"k": 1}, lambda d: ({}, []))
        assert (tmp_path / "a" / "checkpoint.bin").exists()  # nothing of the other process was deleted

        started_by({**owner, "process_start": "0"})  # the pid now belongs to another program: the stage is free
        assert Stages(tmp_path, ["a"]).run("a", "pid reused", {"k": 1}, lambda d: ({"n": 1}, [])) == {"n": 1}
    finally:
        other.kill()
        other.wait()
    started_by(owner)  # its process is gone: the stage is free
    assert Stages(tmp_path, ["a"]).run("a", "after it", {"k": 2}, lambda d: ({"n": 2}, [])) == {"n": 2}
