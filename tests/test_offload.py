"""accelerate big-model loading: a student with its weights offloaded to disk (all of them, or only the layers)
gives the plain load's outputs (and generations). Each module must read its weights only in its own forward, where
the offload hook has just loaded them; a read from outside sees the empty `meta` tensor (ViM's conv path: NaN)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from test_transllava import IMAGE_TOKEN, prompt, tiny_model
from transmamba.modeling_transmamba import TransLlavaMambaForConditionalGeneration, TransMambaForImageClassification

LAYERS_ONLY = {"transmamba.embeddings": "cpu", "transmamba.layers": "disk", "transmamba.layernorm": "cpu",
               "classifier": "cpu"}  # fmt: skip


@pytest.mark.parametrize("device_map", [{"": "disk"}, LAYERS_ONLY], ids=["all", "layers"])
@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_disk_offload_gives_the_plain_logits(tmp_path, preset, device_map):
    TransMambaForImageClassification(tiny_config(preset, scan_backend="auto")).save_pretrained(tmp_path / "model")
    pixels = torch.randn(2, 3, 32, 32)
    plain = TransMambaForImageClassification.from_pretrained(tmp_path / "model").eval()
    offloaded = TransMambaForImageClassification.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=tmp_path / "offload"
    ).eval()
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # really offloaded
    with torch.no_grad():
        expected = plain(pixels, output_direction_outputs=True)
        actual = offloaded(pixels, output_direction_outputs=True)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    for got, want in zip(actual.direction_outputs, expected.direction_outputs, strict=True):  # WSAB's features
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_disk_offload_of_the_vision_language_student(tmp_path):
    tiny_model(cross_mamba_layers=[1]).save_pretrained(tmp_path / "model")
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    assert (ids == IMAGE_TOKEN).any()
    plain = TransLlavaMambaForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    offloaded = TransLlavaMambaForConditionalGeneration.from_pretrained(
        tmp_path / "model", device_map={"": "disk"}, offload_folder=tmp_path / "offload"
    ).eval()
    with torch.no_grad():
        expected = plain(input_ids=ids, pixel_values=pixels).logits
        actual = offloaded(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    mask = torch.ones_like(ids)  # generation steps through the recurrent path (conv window, dt_proj per token)
    generate = {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask, "max_new_tokens": 4}
    assert torch.equal(offloaded.generate(**generate), plain.generate(**generate))
