"""``convert --student videomamba-* --ssm-from CHECKPOINT``: the SSM of a pretrained VideoMamba, as the paper
initialises TransVideoMamba for retrieval, while everything else is still subcloned from the image teacher.

The checkpoint is one of OpenGVLab/VideoMamba's (``.pth``, or its tensors saved as ``.safetensors``): a bimamba mixer
per layer, ``layers.{i}.mixer.*``, with the backward direction's tensors suffixed ``_b``. A wrapper dict
(``model``, ``state_dict``, ``module``) and one key prefix (e.g. ``vision_encoder.`` in a retrieval checkpoint) are
accepted. Student layer i takes checkpoint layer i. Per direction, the SSM branch is copied:

=================  ====================================  ==========================================
student tensor     forward direction (k = 0)             backward direction (k = 1)
=================  ====================================  ==========================================
``conv`` k         ``conv1d.weight``, ``conv1d.bias``    ``conv1d_b.weight``, ``conv1d_b.bias``
``x_proj_weight``  ``x_proj.weight`` (dt, B, C rows)     ``x_proj_b.weight``
``dt_proj_*``      ``dt_proj.weight``, ``dt_proj.bias``  ``dt_proj_b.weight``, ``dt_proj_b.bias``
``A_log``, ``D``   ``A_log``, ``D``                      ``A_b_log``, ``D_b``
=================  ====================================  ==========================================

``out_proj`` stays the teacher's attention output projection and ``in_proj`` its standard init, as with
``--ssm-from`` for Trans-LLaVA: only the SSM branch comes from VideoMamba. Both models scan a direction with a
causal conv along its scan order (VideoMamba flips the sequence for the ``_b`` branch), so the copied tensors mean
the same thing here; our mixer averages the two directions where VideoMamba's sums them, which ``out_proj``
absorbs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig

_SUFFIX = {"forward": "", "backward": "_b"}
_LAYER_KEY = re.compile(r"^(?P<prefix>.*?)layers\.(?P<index>\d+)\.mixer\.(?P<name>.+)$")
_WRAPPERS = ("model", "state_dict", "module")


def _ssm_names(direction: str) -> dict[str, str]:
    """Our tensor (within direction k's slot) -> the checkpoint's mixer key for ``direction``."""
    b = _SUFFIX[direction]
    return {"conv.weight": f"conv1d{b}.weight", "conv.bias": f"conv1d{b}.bias", "x_proj_weight": f"x_proj{b}.weight",
            "dt_proj_weight": f"dt_proj{b}.weight", "dt_proj_bias": f"dt_proj{b}.bias",
            "A_log": "A_b_log" if b else "A_log", "D": f"D{b}"}  # fmt: skip


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, unwrapped from ``{"model": {...}, "epoch": ..., ...}`` style dicts."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file (pickle, zip, header errors) is one message
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--ssm-from {path} cannot be read as a checkpoint ({reason}).") from None
    while isinstance(state, dict) and (inner := [state[w] for w in _WRAPPERS if isinstance(state.get(w), dict)]):
        state = inner[0]
    if not isinstance(state, dict):
        raise ValueError(f"--ssm-from {path}: expected a state dict, found a {type(state).__name__}.")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_videomamba_ssm(path: str | Path, config: TransVideoMambaConfig) -> tuple[dict[int, dict], str]:
    """The checkpoint's mixer tensors per layer (``{index: {key: tensor}}``) and its key prefix, checked against the
    student's shape and depth: one message naming what differs, before any teacher weight is read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--ssm-from {path}: no such file; pass a VideoMamba checkpoint (.pth or .safetensors).")
    tensors = _read_tensors(path)
    layers: dict[int, dict] = {}
    prefixes = set()
    for key, value in tensors.items():
        if match := _LAYER_KEY.match(key):
            prefixes.add(match["prefix"])
            layers.setdefault(int(match["index"]), {})[match["name"]] = value
    if not layers or not any("A_b_log" in mixer for mixer in layers.values()):
        raise ValueError(f"--ssm-from {path} is not a VideoMamba checkpoint: no bidirectional mixer tensors "
                         "(layers.N.mixer.A_log / A_b_log) in it.")  # fmt: skip
    if len(prefixes) > 1:
        raise ValueError(f"--ssm-from {path} holds several encoders ({', '.join(sorted(prefixes))}); save the "
                         "video encoder's tensors alone.")  # fmt: skip
    _check_shapes(path, layers, config)
    return layers, prefixes.pop()


def _check_shapes(path: Path, layers: dict[int, dict], config: TransVideoMambaConfig) -> None:
    inner, state, rank, kernel = config.intermediate_size, config.state_size, config.time_step_rank, config.conv_kernel
    missing = [i for i in range(config.num_hidden_layers) if i not in layers]
    if missing:
        raise ValueError(f"--ssm-from {path} has {len(layers)} layers; the student needs {config.num_hidden_layers} "
                         "(student layer i takes checkpoint layer i): use fewer num_hidden_layers.")  # fmt: skip
    expected = {"A_log": (inner, state), "x_proj.weight": (rank + 2 * state, inner), "dt_proj.weight": (inner, rank),
                "conv1d.weight": (inner, 1, kernel)}  # fmt: skip
    mixer = layers[0]
    wrong = {k: tuple(mixer[k].shape) for k, shape in expected.items() if k in mixer and tuple(mixer[k].shape) != shape}
    absent = [k for direction in config.scan_directions for k in _ssm_names(direction).values() if k not in mixer]
    if wrong or absent:
        problems = [f"{k} is {shape}, needs {expected[k]}" for k, shape in wrong.items()]
        problems += [f"{k} missing" for k in absent]
        raise ValueError(
            f"--ssm-from {path} does not fit the student's mixer (inner {inner}, state {state}, dt rank {rank}, conv "
            f"{kernel}): {'; '.join(problems)}. Choose the preset of the checkpoint's width (videomamba-t: 192, "
            "videomamba-s: 384) and its state_size / time_step_rank."
        )


@torch.no_grad()
def copy_videomamba_ssm(
    student: TransMambaForVideoClassification, layers: dict[int, dict], prefix: str, source: str
) -> dict[str, dict]:
    """Copy each direction's SSM tensors into the student (see the module table); their report entries."""
    entries: dict[str, dict] = {}
    inner = student.config.intermediate_size
    for index, layer in enumerate(student.transmamba.layers):
        mixer, theirs = layer.mixer, layers[index]
        for k, direction in enumerate(mixer.directions):
            for ours, key in _ssm_names(direction).items():
                if ours.startswith("conv."):
                    target = getattr(mixer.conv, ours.split(".")[1])[k * inner : (k + 1) * inner]
                else:
                    target = getattr(mixer, ours)[k]
                target.copy_(theirs[key])
        for name in ("conv.weight", "conv.bias", *(n for n in _ssm_names("forward") if not n.startswith("conv."))):
            keys = [f"{prefix}layers.{index}.mixer.{_ssm_names(d)[name]}" for d in mixer.directions]
            entries[f"transmamba.layers.{index}.mixer.{name}"] = {
                "status": "copied", "source": keys, "note": f"VideoMamba SSM from {source}, one slot per direction",
            }  # fmt: skip
    return entries
