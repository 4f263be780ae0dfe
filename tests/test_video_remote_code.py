"""Saved video folders (classifier with its video processor, retrieval model with both towers) load with
trust_remote_code in a fresh Python that cannot import this project."""

from __future__ import annotations

import json

import numpy as np
import torch
from exported_code import auto_map_modules, code_closure, run_isolated
from test_videomamba import tiny_video
from transformers import BertConfig
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil
from transmamba.modeling_transmamba import (
    TransMambaForVideoClassification,
    TransMambaForVideoTextRetrieval,
    TransVideoTextRetrievalConfig,
)

CHILD = r"""
import json, sys
from pathlib import Path

root = Path(sys.argv[1])
import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForVideoClassification

video = AutoModelForVideoClassification.from_pretrained(root / "video", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(root / "video")
frames = list(np.load(root / "frames.npy"))
pixels = processor(frames, return_tensors="pt")["pixel_values"]
retrieval = AutoModel.from_pretrained(root / "retrieval", trust_remote_code=True).eval()
inputs = torch.load(root / "inputs.pt")
with torch.no_grad():
    logits = video(pixels).logits
    sims = retrieval(**inputs).logits_per_text
(root / "result.json").write_text(json.dumps({
    "modules": [type(video).__module__, type(retrieval).__module__],
    "pixels_shape": list(pixels.shape),
    "video_diff": (logits - torch.load(root / "logits.pt")).abs().max().item(),
    "retrieval_diff": (sims - torch.load(root / "sims.pt")).abs().max().item(),
}))
"""


def test_video_folders_load_in_a_fresh_process_without_the_project(tmp_path):
    config = tiny_video(id2label={0: "up", 1: "down", 2: "left"})
    video = TransMambaForVideoClassification(config).eval()
    video.save_pretrained(tmp_path / "video")
    processor = VideoMAEImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False)
    processor.save_pretrained(tmp_path / "video")
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    pixels = processor(list(frames), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 4, 3, 32, 32)
    text = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    retrieval = TransMambaForVideoTextRetrieval(
        TransVideoTextRetrievalConfig(vision_config=config.to_dict(), text_config=text.to_dict(), projection_dim=8)
    ).eval()
    retrieval.save_pretrained(tmp_path / "retrieval")
    inputs = {"pixel_values": torch.randn(3, 4, 3, 32, 32), "input_ids": torch.randint(0, 50, (3, 6))}
    with torch.no_grad():
        torch.save(video(pixels).logits, tmp_path / "logits.pt")
        torch.save(retrieval(**inputs).logits_per_text, tmp_path / "sims.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    for folder in (tmp_path / "video", tmp_path / "retrieval"):
        assert {p.name for p in folder.glob("*.py")} == code_closure(*auto_map_modules(folder)), folder.name
    proc = run_isolated(CHILD, [tmp_path], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert all(module.startswith("transformers_modules.") for module in result["modules"])
    assert result["pixels_shape"] == [1, 4, 3, 32, 32]
    assert result["video_diff"] == 0.0 and result["retrieval_diff"] == 0.0
    config_json = json.loads((tmp_path / "video" / "config.json").read_text())
    assert config_json["auto_map"]["AutoModelForVideoClassification"] == (
        "modeling_videomamba.TransMambaForVideoClassification"
    )
