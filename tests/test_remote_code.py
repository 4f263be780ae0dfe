"""A saved model folder works with trust_remote_code in a fresh Python that cannot import this project: it carries
exactly the code files it imports (the numba kernel included), runs the kernel when numba is there, and says once
what numba would buy when it is not."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import tiny_config
from exported_code import auto_map_modules, code_closure, last_json, run_isolated
from transformers.dynamic_module_utils import get_imports
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transmamba.modeling_transmamba import TransMambaForImageClassification
from transmamba.modeling_transmamba.selective_scan import NUMBA_HINT, NUMBA_SPEEDUP

KERNEL_FILES = {
    "selective_scan_numba.py",
    "selective_scan_numba_cache.py",
    "selective_scan_numba_kernels.py",
    "selective_scan_numba_math.py",
}

PIPELINE_CHILD = r"""
import json, sys
from pathlib import Path
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline

folder, work = Path(sys.argv[1]), Path(sys.argv[2])
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.load(work / "pixels.pt")).logits
classifier = pipeline("image-classification", model=str(folder), trust_remote_code=True)
image = Image.new("RGB", (50, 40), (200, 30, 90))
print(json.dumps({
    "module": type(model).__module__,
    "max_abs_diff": (logits - torch.load(work / "logits.pt")).abs().max().item(),
    "predictions": classifier(image, top_k=3),
    "pipeline_model": type(classifier.model).__name__,
    "feature_model": type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__,
}))
"""

# Two forwards (all layers each): the no-numba hint must still appear once. Reports which scan ran, from the
# folder's own copy of the dispatcher and which kernel modules that copy imported.
SCAN_CHILD = r"""
import json, sys
import torch
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
pixels = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(pixels).logits
    model(pixels)
package = type(model).__module__.rsplit(".", 1)[0]
print(json.dumps({
    "module": type(model).__module__,
    "backends": sorted(sys.modules[package + ".selective_scan"]._announced),
    "kernel_modules": sorted(n.split(".")[-1] for n in sys.modules if n.startswith(package + ".selective_scan_numba")),
    "logits": logits.tolist(),
}))
"""


def save_model_folder(folder, preset: str, **overrides) -> tuple[TransMambaForImageClassification, dict[int, str]]:
    id2label = {0: "cat", 1: "dog", 2: "fox", 3: "owl", 4: "eel"}
    model = TransMambaForImageClassification(tiny_config(preset, id2label=id2label, **overrides)).eval()
    model.save_pretrained(folder)
    # The PIL processor, chosen knowingly: there is no torchvision here. It saves as the backend-neutral
    # "ViTImageProcessor", so a user with torchvision gets the torchvision variant of the same processing.
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model, id2label


def test_saved_folder_carries_exactly_the_code_it_imports(tmp_path):
    save_model_folder(tmp_path, "pmamba-t")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_transmamba.TransMambaConfig",
        "AutoModel": "modeling_transmamba.TransMambaModel",
        "AutoModelForImageClassification": "modeling_transmamba.TransMambaForImageClassification",
    }
    code = code_closure(*auto_map_modules(tmp_path))
    assert KERNEL_FILES <= code and "mixer.py" in code
    saved = {p.name for p in tmp_path.iterdir()}
    assert saved == code | {"config.json", "model.safetensors", "preprocessor_config.json"}
    for name in code:
        third_party = set(get_imports(tmp_path / name)) - set(sys.stdlib_module_names)
        assert third_party <= {"torch", "transformers"}, f"{name} imports {third_party} outside try/except"


def test_remote_code_serves_the_pipeline_in_a_fresh_process_without_the_project(tmp_path):
    folder, work = tmp_path / "model", tmp_path / "work"
    work.mkdir()
    model, id2label = save_model_folder(folder, "vim-t")  # class token in the middle, two own SSM sets
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.save(model(pixels).logits, work / "logits.pt")
    torch.save(pixels, work / "pixels.pt")
    result = last_json(run_isolated(PIPELINE_CHILD, [folder, work], work))
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
    assert (work / "hf_home" / "modules" / "transformers_modules").is_dir()


def _scan_run(tmp_path, preset: str, numba: bool) -> tuple[dict, str, torch.Tensor]:
    folder = tmp_path / "model"
    model, _ = save_model_folder(folder, preset, scan_backend="auto")
    pixels = torch.randn(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = model(pixels).logits  # the installed class, auto backend: numba here
    proc = run_isolated(SCAN_CHILD, [folder, tmp_path / "pixels.pt"], tmp_path, numba=numba)
    return last_json(proc), proc.stderr, expected


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_exported_student_runs_the_numba_kernel_and_matches_the_installed_class(tmp_path, preset):
    result, stderr, expected = _scan_run(tmp_path, preset, numba=True)
    assert result["module"].startswith("transformers_modules.")
    assert result["backends"] == ["numba"]
    assert {f"{name}.py" for name in result["kernel_modules"]} == KERNEL_FILES
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert "pip install numba" not in stderr


def test_without_numba_the_exported_student_says_once_what_numba_buys(tmp_path):
    result, stderr, expected = _scan_run(tmp_path, "vim-t", numba=False)
    assert result["backends"] == ["no numba", "sequential"] and result["kernel_modules"] == []
    hint = NUMBA_HINT.format(speedup=NUMBA_SPEEDUP)
    lines = [line for line in stderr.splitlines() if "numba" in line]
    assert len(lines) == 1 and hint in lines[0], stderr[-3000:]
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=1e-5, atol=1e-5)
