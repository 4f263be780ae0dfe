"""Load a ViT-family teacher through the Auto classes and find the modules subcloning reads.

Modules are found by role (the attention's output projection, the MLP's two linears, …) on the loaded model, not
by state-dict key strings, so the mapping survives `transformers` renaming keys (v5: ``attention.o_proj``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, PretrainedConfig

from ..model_checks import check_config_values, check_weights, load_config

SUPPORTED_MODEL_TYPES = ("vit", "deit", "dinov2")
# Where each role lives in the model types above, transformers 5 names first, 4.x names after.
_ROLES = {
    "norm_before": ("layernorm_before", "norm1"),
    "norm_after": ("layernorm_after", "norm2"),
    "q": ("attention.q_proj", "attention.attention.query"),
    "k": ("attention.k_proj", "attention.attention.key"),
    "v": ("attention.v_proj", "attention.attention.value"),
    "attn_out": ("attention.o_proj", "attention.output.dense"),
    "fc1": ("mlp.fc1", "intermediate.dense"),
    "fc2": ("mlp.fc2", "output.dense"),
}


@dataclass
class TeacherBlock:
    """One Transformer block; ``scale_attn``/``scale_mlp`` are DINOv2's layer scales (None elsewhere)."""

    norm_before: nn.LayerNorm
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    attn_out: nn.Linear
    norm_after: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    scale_attn: nn.Parameter | None
    scale_mlp: nn.Parameter | None


@dataclass
class Teacher:
    """A loaded teacher and the modules subcloning copies from."""

    source: str
    is_local: bool
    model: nn.Module
    config: PretrainedConfig
    image_processor: object | None
    patch_projection: nn.Conv2d
    cls_token: nn.Parameter
    position_embeddings: nn.Parameter
    num_prefix_tokens: int  # class token (+ DeiT's distillation token) before the patch grid
    blocks: list[TeacherBlock]
    final_norm: nn.LayerNorm
    head: nn.Linear | None
    head_pooling: str | None  # "cls", or "cls+mean" (DINOv2's classifier reads [cls, mean of patches])

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def mlp_hidden_size(self) -> int:
        return self.blocks[0].fc1.out_features

    @property
    def patch_size(self) -> int:
        return self.patch_projection.kernel_size[0]

    @property
    def position_grid(self) -> int:
        """Side of the patch grid the teacher's position embeddings were trained for."""
        count = self.position_embeddings.shape[1] - self.num_prefix_tokens
        side = int(round(count**0.5))
        if side * side != count:
            raise ValueError(f"Teacher position embeddings hold {count} patches, not a square grid; cannot map them.")
        return side

    def parameter_names(self) -> dict[int, str]:
        """id(parameter) -> its name in the teacher's state dict (report provenance)."""
        return {id(p): name for name, p in self.model.named_parameters(remove_duplicate=False)}

    def base_forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        """Run the teacher's encoder (no head), interpolating positions when the input size differs."""
        base = self.model.base_model
        kwargs = {"output_hidden_states": output_hidden_states}
        if self.model_type != "dinov2":  # DINOv2 always interpolates; ViT/DeiT need the flag
            kwargs["interpolate_pos_encoding"] = pixel_values.shape[-1] != self.config.image_size
        return base(pixel_values=pixel_values, **kwargs)


def default_image_size(config: PretrainedConfig, processor) -> int:
    """The size the teacher's image processor feeds it (DINOv2: 224 crop, not its 518 config), else its config's."""
    if processor is not None:
        crop, size = getattr(processor, "crop_size", None), getattr(processor, "size", None)
        if getattr(processor, "do_center_crop", False) and crop and crop.get("height"):
            return int(crop["height"])
        if size and size.get("height"):
            return int(size["height"])
    return int(config.image_size)


def load_teacher_config(source: str) -> PretrainedConfig:
    """Read and vet the teacher's config only (cheap), so bad input fails before any weights load."""
    config = load_config(source, "Teacher")
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"Teacher {source!r} is a {config.model_type!r} model; `transmamba convert` subclones ViT-family image "
            f"Transformers ({', '.join(SUPPORTED_MODEL_TYPES)}), e.g. facebook/deit-small-patch16-224."
        )
    check_config_values(config, f"Teacher {source!r}")
    if getattr(config, "use_swiglu_ffn", False):
        raise ValueError(f"Teacher {source!r} uses a SwiGLU MLP (DINOv2-giant); students have a GELU MLP to copy into.")
    return config


def _module(root: nn.Module, role: str, expected: type) -> nn.Module:
    for path in _ROLES[role]:
        module = root
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, expected):
            return module
    raise ValueError(f"Teacher block {type(root).__name__} has no {role} ({' or '.join(_ROLES[role])}).")


def _layers(base: nn.Module, depth: int) -> nn.ModuleList:
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ValueError(f"Could not find the {depth} Transformer blocks in {type(base).__name__}.")


def _block(layer: nn.Module) -> TeacherBlock:
    scales = [getattr(getattr(layer, name, None), "lambda1", None) for name in ("layer_scale1", "layer_scale2")]
    return TeacherBlock(
        norm_before=_module(layer, "norm_before", nn.LayerNorm),
        q=_module(layer, "q", nn.Linear),
        k=_module(layer, "k", nn.Linear),
        v=_module(layer, "v", nn.Linear),
        attn_out=_module(layer, "attn_out", nn.Linear),
        norm_after=_module(layer, "norm_after", nn.LayerNorm),
        fc1=_module(layer, "fc1", nn.Linear),
        fc2=_module(layer, "fc2", nn.Linear),
        scale_attn=scales[0],
        scale_mlp=scales[1],
    )


def _head(model: nn.Module, hidden: int) -> tuple[nn.Linear | None, str | None]:
    """The class head: ``classifier``, or DeiT-with-teacher's ``cls_classifier`` (its class-token head; the
    distillation head reads a token students don't have)."""
    for name in ("cls_classifier", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            if head.in_features == hidden:
                return head, "cls"
            if head.in_features == 2 * hidden:
                return head, "cls+mean"
    return None, None


def load_image_processor(source: str):
    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        return None


def load_teacher(source: str, config: PretrainedConfig | None = None) -> Teacher:
    """Load weights with the class its config names (a classifier when it has a head) and locate its modules."""
    config = config or load_teacher_config(source)
    architectures = config.architectures or []
    auto = AutoModelForImageClassification if any("ImageClassification" in a for a in architectures) else AutoModel
    check_weights(source, "Teacher")
    model = auto.from_pretrained(source, config=config).eval()
    base = model.base_model
    embeddings = base.embeddings
    projection = getattr(getattr(embeddings, "patch_embeddings", None), "projection", None)
    if not isinstance(projection, nn.Conv2d) or getattr(embeddings, "cls_token", None) is None:
        raise ValueError(f"Teacher {source!r} has no ViT-style patch embedding with a class token.")
    final_norm = getattr(base, "layernorm", None)
    if not isinstance(final_norm, nn.LayerNorm):
        raise ValueError(f"Teacher {source!r} has no final LayerNorm (`layernorm`).")
    head, pooling = _head(model, config.hidden_size)
    return Teacher(
        source=source,
        is_local=os.path.isdir(source),
        model=model,
        config=config,
        image_processor=load_image_processor(source),
        patch_projection=projection,
        cls_token=embeddings.cls_token,
        position_embeddings=embeddings.position_embeddings,
        num_prefix_tokens=1 + (getattr(embeddings, "distillation_token", None) is not None),
        blocks=[_block(layer) for layer in _layers(base, config.num_hidden_layers)],
        final_norm=final_norm,
        head=head,
        head_pooling=pooling,
    )
