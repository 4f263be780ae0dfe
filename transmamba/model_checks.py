"""Cheap checks of a model folder or Hub id before any weight is loaded: its config (readable, sane values, no
custom code), its safetensors files (complete), and, for our students, that config and weights agree.

Every failure is one ValueError that says what is wrong and how to fix it; the commands turn it into exit code 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Shape fields of vision configs that must be positive integers (absent ones are not checked).
POSITIVE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                   "image_size", "num_channels", "state_size", "expand", "time_step_rank")  # fmt: skip


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_config(source: str, option: str):
    """``AutoConfig.from_pretrained(source)`` with one clear message for every way it fails."""
    from transformers import AutoConfig

    from . import modeling_transmamba  # noqa: F401 - registers our students with the Auto classes

    is_local = os.path.isdir(source)
    if not is_local and (source.startswith((".", "/", "~")) or os.path.exists(source)):
        raise ValueError(f"{option} {source!r} is not a folder; pass a model folder or a Hub id like org/name.")
    if is_local:
        _check_config_file(Path(source), option)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as error:
        if "trust_remote_code" in str(error):
            raise ValueError(_custom_code(source, option)) from None
        if is_local:
            raise ValueError(f"{option} folder {source!r} has no readable transformers config ({error}).") from None
        where = (
            f"it is not in the local Hub cache and HF_HUB_OFFLINE=1 forbids downloading it; download it once online "
            f"(`hf download {source}`) or pass a local folder"
            if _offline()
            else "it could not be found or downloaded; check the id, your network and `hf auth login` for private "
            "models, or pass a local folder"
        )
        raise ValueError(f"Cannot load {option} {source!r}: {where}.") from None


def _custom_code(source: str, option: str) -> str:
    return (
        f"{option} {source!r} is a custom-code model (its config needs trust_remote_code); transmamba works with "
        "models whose classes ship with transformers (ViT, DeiT, DINOv2, LLaVA) and with its own students."
    )


def _check_config_file(folder: Path, option: str) -> None:
    """config.json exists and is JSON; custom code that transformers does not know is named as such."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{option} folder {folder} has no config.json; pass a folder saved with save_pretrained.")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-download or re-save the model.") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds no JSON object; re-download or re-save the model.")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "auto_map" in raw and raw.get("model_type") not in CONFIG_MAPPING:
        raise ValueError(_custom_code(str(folder), option))
    check_config_values(raw, f"{option} {path}")


def check_config_values(config, where: str, fields: tuple[str, ...] = POSITIVE_FIELDS) -> None:
    """Shape fields must be positive integers: ``hidden_size: "abc"`` or ``patch_size: 0`` stop here."""
    get = config.get if isinstance(config, dict) else lambda name: getattr(config, name, None)
    for name in fields:
        value = get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{where}: {name} is {value!r}, but it must be a positive integer; fix the value in config.json "
                "(or re-download / re-convert the model)."
            )


def check_weights(source: str, option: str) -> None:
    """Every safetensors file of a local folder opens (its header covers the file): a truncated download stops here."""
    if not os.path.isdir(source):
        return
    from safetensors import SafetensorError, safe_open

    if not any(Path(source).glob("*.safetensors")) and not any(Path(source).glob("*.bin")):
        raise ValueError(f"{option} folder {source} has no weights (model.safetensors); pass a folder saved with "
                         "save_pretrained, or download the model again.")  # fmt: skip
    for path in sorted(Path(source).glob("*.safetensors")):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{option} weights {path} are damaged or incomplete ({error}); re-download, re-save or re-convert "
                "the model."
            ) from None


def check_student_weights(source: str, config, option: str = "--student") -> None:
    """A TransMamba folder's tensors have the shapes its config makes (meta device: no memory, no compute)."""
    check_weights(source, option)
    path = Path(source) / "model.safetensors"
    if not path.is_file():
        return
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForImageClassification, AutoModelForVideoClassification

    from .modeling_transmamba import TransVideoMambaConfig  # registers every family with the Auto classes

    auto = (
        AutoModelForVideoClassification
        if isinstance(config, TransVideoMambaConfig)
        else AutoModelForImageClassification
    )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in auto.from_config(config).state_dict().items()}
    with safe_open(path, "pt") as handle:
        stored = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    wrong = [f"{k} {stored[k]} vs {expected[k]}" for k in expected if k in stored and stored[k] != expected[k]]
    missing = [k for k in expected if k not in stored and not k.endswith("num_batches_tracked")]
    if wrong or missing:
        detail = f"shapes differ: {'; '.join(wrong[:3])}" if wrong else f"missing: {', '.join(missing[:3])}"
        raise ValueError(
            f"{option} {source}: config.json and model.safetensors disagree ({detail}); the folder was edited or "
            "mixed from two models. Re-convert the student with `transmamba convert`."
        )
