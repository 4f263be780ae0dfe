"""`train-vlm --lora` on a tiny LLaVA teacher and its TransLlavaMamba student: only the adapters on the language
model's projections train, and the saved student is merged (plain weights that load without peft or this project)."""

from __future__ import annotations

import json

import pytest
import torch
from exported_code import run_isolated
from test_llava_distill import save_teacher, training_args
from transformers import AutoModelForImageTextToText
from transmamba.conversion.llava import subclone_llava
from transmamba.trainers.args import VlmDistillationArguments
from transmamba.trainers.train_vlm import train_vlm

from transmamba.image_text import LlavaCollator, LlavaConversationEncoder, offline_image_text

CHILD = r"""
import json, sys
from pathlib import Path

sys.modules["peft"] = None  # any import of peft now fails: the folder must not need it
folder, work = Path(sys.argv[1]), Path(sys.argv[2])
import torch
from transformers import AutoModelForImageTextToText

model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
batch = torch.load(work / "batch.pt")
with torch.no_grad():
    logits = model(**batch).logits
(work / "result.json").write_text(json.dumps({
    "module": type(model).__module__,
    "max_abs_diff": (logits - torch.load(work / "logits.pt")).abs().max().item(),
}))
"""


@pytest.fixture(autouse=True)
def _sequential_scan(monkeypatch):
    monkeypatch.setenv("TRANSMAMBA_SCAN_BACKEND", "sequential")


def test_lora_trains_only_adapters_and_saves_a_merged_student(tmp_path):
    torch.manual_seed(0)
    data = offline_image_text("digits", max_samples=32)
    teacher = save_teacher(tmp_path / "teacher", data)
    subclone_llava(teacher, num_layers=2, state_size=4, cross_mamba_layers=[1], output_dir=tmp_path / "student")
    before = AutoModelForImageTextToText.from_pretrained(tmp_path / "student", trust_remote_code=True).state_dict()
    bad = VlmDistillationArguments(teacher=teacher, student=str(tmp_path / "student"), lora=True, lora_r=0)
    with pytest.raises(ValueError, match="--lora_r and --lora_alpha must be positive"):
        train_vlm(bad, training_args(tmp_path / "bad", max_steps=1), data)  # refused before any model is loaded
    args = VlmDistillationArguments(teacher=teacher, student=str(tmp_path / "student"), lora=True, lora_r=2,
                                    lora_alpha=4)  # fmt: skip
    trainer = train_vlm(args, training_args(tmp_path / "out", max_steps=3, learning_rate=1e-2), data).trainer

    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable), sorted(trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 2)[-2] + "." + n.split(".lora_")[0].rsplit(".", 1)[-1]
               for n in trainable}  # fmt: skip
    assert targets == {"mixer.in_proj", "mixer.out_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert not any("vision_tower" in n or "multi_modal_projector" in n for n in trainable)
    peft_student = trainer.model.student
    assert any(p.abs().sum() > 0 for n, p in peft_student.named_parameters() if "lora_B" in n)  # adapters moved

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    saved = merged.state_dict()
    assert not any("lora" in k or "base_layer" in k for k in saved) and set(saved) == set(before)
    changed = {k for k in saved if not torch.equal(saved[k], before[k])}
    assert changed and all(k.endswith(("in_proj.weight", "out_proj.weight", "_proj.weight")) for k in changed)
    assert not any("vision_tower" in k or "A_log" in k or "norm" in k for k in changed)  # only merged targets

    # The merged student computes what the adapted one did, and loads in a process without peft or transmamba.
    encoder = LlavaConversationEncoder(trainer.processing_class)
    batch = LlavaCollator(1)([encoder.encode(data["test"][i]["image"], data["test"][i]["conversations"])
                              for i in range(2)])  # fmt: skip
    batch = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        adapted, plain = peft_student.eval()(**batch).logits, merged(**batch).logits
    assert (adapted - plain).abs().max() < 1e-4
    work = tmp_path / "work"
    work.mkdir()
    torch.save(batch, work / "batch.pt")
    torch.save(plain, work / "logits.pt")
    proc = run_isolated(CHILD, [tmp_path / "out", work], work, TRANSMAMBA_SCAN_BACKEND="sequential")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((work / "result.json").read_text())
    assert result["module"].startswith("transformers_modules.") and result["max_abs_diff"] < 1e-5
