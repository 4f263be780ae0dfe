"""Hierarchical TransMamba students (VMamba-style) as `transformers` models: encoder, classifier, backbone.

Layout is channels-last throughout (``(batch, height, width, channels)`` flattened to tokens in raster order),
as in VMamba; the backbone returns ``(batch, channels, height, width)`` maps as every `transformers` backbone does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BackboneOutput

try:  # transformers >= 5.x moved the mixins; older versions keep them under utils
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # pragma: no cover - depends on the installed transformers
    from transformers.utils.backbone_utils import BackboneMixin

from .configuration_vmamba import TransVMambaConfig, image_size_message
from .mixer import TransMambaMixer
from .modeling_transmamba import (
    ClassifierMixin,
    TransMambaImageClassifierOutput,
    TransMambaLayer,
    TransMambaModelOutput,
    drop_path_rates,
    output_flags,
)


@dataclass
class TransVMambaModelOutput(TransMambaModelOutput):
    """Encoder output: the isotropic encoder's fields.

    last_hidden_state: final tokens after the last norm, (batch, length, hidden) in raster order.
    hidden_states: the stem output then each stage's output, ``(batch, channels, height, width)``.
    direction_outputs: one tensor per block (all stages in order), (batch, directions, length, width): each scan's
    share of the mixer output in that scan's order (what the WSAB distillation compares with the teacher).
    """


@dataclass
class TransVMambaImageClassifierOutput(TransMambaImageClassifierOutput):
    """Same fields as the isotropic classifier's: loss, logits, hidden_states, direction_outputs."""


class TransVMambaStem(nn.Module):
    """``patch_size`` x ``patch_size`` patch embedding + LayerNorm (VMamba's v0 stem), channels-last out."""

    def __init__(self, config: TransVMambaConfig):
        super().__init__()
        self.config = config
        width = config.hidden_sizes[0]
        self.projection = nn.Conv2d(config.num_channels, width, config.patch_size, config.patch_size)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        channels = self.config.num_channels
        if pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"Expected pixel_values of shape (batch, {channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; convert images to {channels} channels (e.g. PIL's .convert('RGB'))."
            )
        height, width = pixel_values.shape[-2:]
        if height % self.config.total_stride or width % self.config.total_stride:
            raise ValueError(image_size_message(self.config, height, width))
        patches = self.projection(pixel_values.to(self.projection.weight.dtype))
        return self.norm(patches.permute(0, 2, 3, 1))


class TransVMambaPatchMerging(nn.Module):
    """VMamba's PatchMerging2D: each 2x2 neighbourhood concatenated (4C), LayerNorm, Linear 4C -> C_next."""

    def __init__(self, width: int, next_width: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * width, eps=eps)
        self.reduction = nn.Linear(4 * width, next_width, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # (batch, H, W, C): top-left, bottom-left, top-right, bottom-right, as VMamba concatenates them.
        merged = torch.cat(
            [hidden[:, 0::2, 0::2], hidden[:, 1::2, 0::2], hidden[:, 0::2, 1::2], hidden[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(merged))


class TransVMambaStage(nn.Module):
    """Optional 2x2 merge from the previous stage, then ``depth`` blocks ``x + SS2D(LN(x))``, ``x + MLP(LN(x))``."""

    def __init__(self, config: TransVMambaConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        mixer_config = config.stage_mixer_config(stage)
        self.downsample = None
        if stage > 0:
            width = config.hidden_sizes[stage - 1]
            self.downsample = TransVMambaPatchMerging(width, config.hidden_sizes[stage], config.layer_norm_eps)
        self.layers = nn.ModuleList([TransMambaLayer(mixer_config, rate) for rate in drop_paths])

    def forward(self, hidden: torch.Tensor, output_direction_outputs: bool, directions: list | None) -> torch.Tensor:
        if self.downsample is not None:
            hidden = self.downsample(hidden)
        batch, height, width, channels = hidden.shape
        tokens = hidden.reshape(batch, height * width, channels)
        for layer in self.layers:
            tokens, shares = layer(tokens, (height, width), output_direction_outputs)
            if directions is not None:
                directions.append(shares)
        return tokens.view(batch, height, width, channels)


class TransVMambaPreTrainedModel(PreTrainedModel):
    config_class = TransVMambaConfig
    config: TransVMambaConfig
    base_model_prefix = "vmamba"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransVMambaStem", "TransMambaLayer", "TransVMambaPatchMerging"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransMambaMixer):
            module.reset_ssm_parameters()


class TransVMambaEncoder(nn.Module):
    """Stem and stages; returns the last stage's map and, on request, every stage's map and block shares."""

    def __init__(self, config: TransVMambaConfig):
        super().__init__()
        rates = drop_path_rates(config.drop_path_rate, config.num_hidden_layers)  # one ramp over all blocks
        self.stem = TransVMambaStem(config)
        starts = [sum(config.depths[:i]) for i in range(config.num_stages)]
        self.stages = nn.ModuleList(
            TransVMambaStage(config, i, rates[start : start + depth])
            for i, (start, depth) in enumerate(zip(starts, config.depths, strict=True))
        )

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool, output_direction_outputs: bool):
        hidden = self.stem(pixel_values)
        maps = [hidden] if output_hidden_states else None
        directions = [] if output_direction_outputs else None
        for stage in self.stages:
            hidden = stage(hidden, output_direction_outputs, directions)
            if maps is not None:
                maps.append(hidden)
        return hidden, maps, directions


def _channels_first(maps: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(m.permute(0, 3, 1, 2).contiguous() for m in maps)


class TransVMambaModel(TransVMambaPreTrainedModel):
    def __init__(self, config: TransVMambaConfig):
        super().__init__(config)
        self.encoder = TransVMambaEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.stem.projection

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_direction_outputs: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> TransVMambaModelOutput | tuple:
        """``interpolate_pos_encoding`` is accepted for ViT-style callers and ignored: there are no position
        embeddings, any image whose sides are multiples of ``config.total_stride`` works."""
        if pixel_values is None:
            raise ValueError("pixel_values is required: a (batch, channels, height, width) tensor.")
        output_hidden_states, return_dict = output_flags(self.config, output_hidden_states, return_dict)
        hidden, maps, directions = self.encoder(pixel_values, output_hidden_states, bool(output_direction_outputs))
        tokens = self.layernorm(hidden.flatten(1, 2))
        output = TransVMambaModelOutput(
            last_hidden_state=tokens,
            pooler_output=tokens.mean(dim=1),
            hidden_states=_channels_first(maps) if maps is not None else None,
            direction_outputs=tuple(directions) if directions is not None else None,
        )
        return output if return_dict else output.to_tuple()


class TransVMambaForImageClassification(ClassifierMixin, TransVMambaPreTrainedModel):
    output_class = TransVMambaImageClassifierOutput

    def __init__(self, config: TransVMambaConfig):
        super().__init__(config)
        self.init_classifier(config, TransVMambaModel(config))


class TransVMambaBackbone(BackboneMixin, TransVMambaPreTrainedModel):
    """Per-stage feature maps for dense heads (detection, segmentation), ``AutoBackbone``-compatible.

    Each selected stage gets its own LayerNorm, as in VMamba's and Swin's backbones.
    """

    has_attentions = False

    def __init__(self, config: TransVMambaConfig):
        super().__init__(config)
        self.num_features = [config.hidden_sizes[0]] + list(config.hidden_sizes)
        self.encoder = TransVMambaEncoder(config)
        self.hidden_states_norms = nn.ModuleDict(
            {
                stage: nn.LayerNorm(width, eps=config.layer_norm_eps)
                for stage, width in zip(self.out_features, self.channels, strict=True)
            }
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.stem.projection

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple:
        output_hidden_states, return_dict = output_flags(self.config, output_hidden_states, return_dict)
        _, maps, _ = self.encoder(pixel_values, True, False)
        features = tuple(
            self.hidden_states_norms[name](hidden).permute(0, 3, 1, 2).contiguous()
            for name, hidden in zip(self.stage_names, maps, strict=True)
            if name in self.out_features
        )
        output = BackboneOutput(
            feature_maps=features, hidden_states=_channels_first(maps) if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "TransVMambaBackbone",
    "TransVMambaForImageClassification",
    "TransVMambaImageClassifierOutput",
    "TransVMambaModel",
    "TransVMambaModelOutput",
    "TransVMambaPreTrainedModel",
]
