"""A saved model folder works with trust_remote_code in a fresh Python that cannot import this project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch
from conftest import tiny_config
from transformers.dynamic_module_utils import get_imports
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transmamba.modeling_transmamba import TransMambaForImageClassification

CODE_FILES = {
    "configuration_transmamba.py",
    "modeling_transmamba.py",
    "mixer.py",
    "scan_orders.py",
    "selective_scan.py",
}

# Runs under `python -I -S`: no site processing, so the editable install's .pth finder never loads; only the
# plain site-packages folder is put back on sys.path (given as argv[1]). The first check proves the project is gone.
CHILD = r"""
import json, sys
from pathlib import Path

sys.path.append(sys.argv[1])
folder, work = Path(sys.argv[2]), Path(sys.argv[3])
for name in ("transmamba", "modeling_transmamba"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable in the child: the test would not prove anything")

import torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.load(work / "pixels.pt")).logits
classifier = pipeline("image-classification", model=str(folder), trust_remote_code=True)
image = Image.new("RGB", (50, 40), (200, 30, 90))
(work / "result.json").write_text(json.dumps({
    "module": type(model).__module__,
    "max_abs_diff": (logits - torch.load(work / "logits.pt")).abs().max().item(),
    "predictions": classifier(image, top_k=3),
    "pipeline_model": type(classifier.model).__name__,
    "feature_model": type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__,
}))
"""


def save_model_folder(folder: Path, preset: str) -> tuple[TransMambaForImageClassification, dict[int, str]]:
    id2label = {0: "cat", 1: "dog", 2: "fox", 3: "owl", 4: "eel"}
    model = TransMambaForImageClassification(tiny_config(preset, id2label=id2label)).eval()
    model.save_pretrained(folder)
    # The PIL processor, chosen knowingly: there is no torchvision here. It saves as the backend-neutral
    # "ViTImageProcessor", so a user with torchvision gets the torchvision variant of the same processing.
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model, id2label


def test_saved_folder_carries_its_code(tmp_path):
    save_model_folder(tmp_path, "pmamba-t")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_transmamba.TransMambaConfig",
        "AutoModel": "modeling_transmamba.TransMambaModel",
        "AutoModelForImageClassification": "modeling_transmamba.TransMambaForImageClassification",
    }
    saved = {path.name for path in tmp_path.glob("*.py")}
    assert CODE_FILES <= saved
    for name in saved:
        third_party = set(get_imports(tmp_path / name)) - set(sys.stdlib_module_names)
        assert third_party <= {"torch", "transformers"}, f"{name} imports {third_party} outside try/except"


def test_remote_code_loads_in_a_fresh_process_without_the_project(tmp_path):
    folder, work = tmp_path / "model", tmp_path / "work"
    work.mkdir()
    model, id2label = save_model_folder(folder, "vim-t")  # class token in the middle, two own SSM sets
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.save(model(pixels).logits, work / "logits.pt")
    torch.save(pixels, work / "pixels.pt")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "OMP_NUM_THREADS": "1",
    }
    site_packages = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, site_packages, str(folder), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((work / "result.json").read_text())
    assert result["module"].startswith("transformers_modules.")  # the folder's copy of the code, not ours
    assert result["pipeline_model"] == "TransMambaForImageClassification"
    assert result["feature_model"] == "TransMambaModel"  # feature extraction from a classifier checkpoint
    assert result["max_abs_diff"] == 0.0
    predictions = result["predictions"]
    assert isinstance(predictions, list) and len(predictions) == 3
    assert all(set(p) == {"label", "score"} for p in predictions)
    assert {p["label"] for p in predictions} <= set(id2label.values())
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert (tmp_path / "hf_home" / "modules" / "transformers_modules").is_dir()
