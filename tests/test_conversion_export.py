"""The exported folder: loads anywhere (fresh process, our package blocked, offline), carries a valid model card,
survives being killed mid-write, and the Hub paths (cache, dry run, offline push) give one clear message each."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from exported_code import auto_map_modules, code_closure, last_json, run_isolated
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.hub import planned_upload, push_folder
from transmamba.modeling_transmamba import TransMambaForImageClassification

from transmamba.folders import PARTIAL as PARTIAL_MARK

SSM = "state_size=4,time_step_rank=2"
STUDENT = f"vim-t,hidden_size=16,num_hidden_layers=2,{SSM}"
# Besides the code files the model imports (exported_code.code_closure), exactly these.
DATA_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", REPORT_NAME}
EXPECTED_FILES = DATA_FILES | code_closure("configuration_transmamba", "modeling_transmamba")

# Runs in a fresh process without our package (exported_code.run_isolated): only the folder's own code can serve.
LOAD_ELSEWHERE = r"""
import json, sys
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

folder = sys.argv[1]
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(pixel_values=torch.load(sys.argv[2])).logits
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
predictions = classify(Image.new("RGB", (45, 37), (200, 40, 90)), top_k=3)
print(json.dumps({"module": type(model).__module__, "logits": logits.tolist(), "predictions": predictions}))
"""


def _teacher(path: Path, hidden: int = 32, layers: int = 2, image: int = 32, license: str | None = "mit") -> Path:
    torch.manual_seed(0)
    shape = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=4 * hidden)
    config = ViTConfig(**shape, image_size=image, patch_size=8, num_labels=3)
    ViTForImageClassification(config).save_pretrained(path)
    if license:
        (path / "README.md").write_text(f"---\nlicense: {license}\n---\n# tiny ViT\n")
    return path


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1", **extra)
    return env


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "transmamba", "convert", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_exported_folder_loads_without_our_package(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert main(["--teacher", str(teacher), "--student", STUDENT, "--output", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == DATA_FILES | code_closure(*auto_map_modules(out))
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("TransMambaForImageClassification")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = TransMambaForImageClassification.from_pretrained(out).eval()(pixels).logits
    result = last_json(run_isolated(LOAD_ELSEWHERE, [out, tmp_path / "pixels.pt"], tmp_path))
    assert result["module"].startswith("transformers_modules.")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert len(result["predictions"]) == 3
    assert {p["label"] for p in result["predictions"]} <= {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_model_card_round_trips_with_metadata(tmp_path):
    teacher = _teacher(tmp_path / "teacher", license="apache-2.0")
    out = tmp_path / "student"
    argv = ["--teacher", str(teacher), "--student", STUDENT, "--output", str(out), "--base-model", "org/tiny-vit"]
    assert main(argv) == 0
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "org/tiny-vit"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0"
    assert {"transmamba", "mamba", "vim", "stage-1"} <= set(data["tags"])
    again = ModelCard(str(card))
    assert again.data.to_dict() == data and again.text == card.text
    assert "not trained" in card.text and "trust_remote_code=True" in card.text
    report = json.loads((out / REPORT_NAME).read_text())
    assert set(report["summary"]) == {"copied", "sliced", "initialised"}


def _cache_teacher(hub_cache: Path, repo_id: str, teacher: Path) -> None:
    """Lay a model out as `huggingface_hub` caches a download, so offline loading finds it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in teacher.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_hub_paths_offline(tmp_path):
    env = _env(tmp_path)
    _cache_teacher(tmp_path / "hf-home" / "hub", "test-org/tiny-vit", _teacher(tmp_path / "teacher"))

    run = _cli(["--teacher", "test-org/missing", "--student", STUDENT, "--output", "a"], env, tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "not in the local Hub cache" in _last_line(run.stderr)
    assert not (tmp_path / "a").exists()

    args = ["--teacher", "test-org/tiny-vit", "--student", STUDENT, "--output", "b", "--push-to-hub", "me/trans-vim"]
    run = _cli([*args, "--dry-run"], env, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "https://huggingface.co/me/trans-vim" in run.stdout
    assert all(name in run.stdout for name in EXPECTED_FILES)
    card = ModelCard.load(tmp_path / "b" / "README.md")
    assert card.data.base_model == "test-org/tiny-vit" and card.data.license == "mit"

    run = _cli([*args[:5], "c", *args[6:]], env, tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "offline mode (HF_HUB_OFFLINE=1)" in _last_line(run.stderr)
    assert "complete in" in _last_line(run.stderr)
    assert EXPECTED_FILES == {p.name for p in (tmp_path / "c").iterdir()}
    TransMambaForImageClassification.from_pretrained(tmp_path / "c")


def _complete(folder: Path) -> bool:
    """Everything a finished convert writes is present and readable."""
    names = {p.name for p in folder.iterdir()}
    if not EXPECTED_FILES <= names:
        return False
    json.loads((folder / "config.json").read_text())
    json.loads((folder / REPORT_NAME).read_text())
    return len(load_file(folder / "model.safetensors")) > 0


def test_convert_killed_while_writing_leaves_no_complete_looking_folder(tmp_path):
    """SIGKILL a real convert at a random moment after it starts writing; repeat; the output is never half there."""
    teacher = _teacher(tmp_path / "teacher", hidden=256, layers=8, image=64, license=None)
    env = _env(tmp_path)
    out = tmp_path / "student"
    command = [sys.executable, "-m", "transmamba", "convert", "--teacher", str(teacher), "--output", str(out),
               "--student", f"pmamba-t,hidden_size=256,num_hidden_layers=8,{SSM}"]  # fmt: skip
    rng = random.Random(0)
    hit_partial = 0
    for attempt in range(3):
        if attempt < 2 and out.exists():  # an earlier attempt finished before the kill
            shutil.rmtree(out)
        process = subprocess.Popen(command + ["--overwrite"] * (attempt == 2), env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            # writing has begun: a temporary sibling appeared (or the output itself, were the write not atomic)
            if any(tmp_path.glob(f".student{PARTIAL_MARK}*")) or (attempt < 2 and out.exists()):
                time.sleep(rng.uniform(0.0, 0.03))
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        hit_partial += process.returncode == -signal.SIGKILL and any(tmp_path.glob(f".student{PARTIAL_MARK}*"))
        assert not out.exists() or _complete(out), f"attempt {attempt}: incomplete {sorted(os.listdir(out))}"
        if attempt == 1:  # finish one convert: later kills run with --overwrite over a complete folder
            finished = subprocess.run(
                command + ["--overwrite"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
            assert finished.returncode == 0, finished.stderr[-3000:]
            assert _complete(out)
            assert not any(tmp_path.glob(f".student{PARTIAL_MARK}*"))  # stale partials of killed runs removed
    assert hit_partial >= 1  # at least one kill landed while the folder was being written


def test_push_without_a_token_names_the_fix(tmp_path, monkeypatch):
    """Online mode but nobody logged in: one message, nothing sent (no token means no request is made)."""

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="no Hugging Face token .*hf auth login.*complete in"):
        push_folder(tmp_path / "model", "me/model", private=True)
    plan = planned_upload(tmp_path / "model", "me/model", private=True)
    assert "https://huggingface.co/me/model (private model repo)" in plan and "config.json  (2 bytes)" in plan
