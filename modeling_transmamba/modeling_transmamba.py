"""TransMamba vision students as `transformers` models: embeddings, Transformer-shaped Mamba blocks, heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_transmamba import TransMambaConfig
from .mixer import TransMambaMixer


@dataclass
class TransMambaModelOutput(ModelOutput):
    """Encoder output.

    direction_outputs: one tensor per layer, (batch, directions, length, hidden): each scan direction's share of
    the mixer output, in that direction's scan order (what the WSAB distillation compares with the teacher).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    direction_outputs: tuple[torch.Tensor, ...] | None = None


@dataclass
class TransMambaImageClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    direction_outputs: tuple[torch.Tensor, ...] | None = None


class TransMambaPatchEmbeddings(nn.Module):
    """Non-overlapping patch projection, named as ViT's so a teacher's stem copies straight in."""

    def __init__(self, config: TransMambaConfig):
        super().__init__()
        self.num_channels, self.patch_size = config.num_channels, config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"Expected pixel_values of shape (batch, {self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; convert images to {self.num_channels} channels (e.g. "
                "PIL's .convert('RGB')) or build the model with a matching num_channels."
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the patch size {self.patch_size}; resize or "
                f"crop to a multiple of {self.patch_size} (the image processor does this)."
            )
        patches = self.projection(pixel_values.to(self.projection.weight.dtype))
        return patches.flatten(2).transpose(1, 2), (patches.shape[-2], patches.shape[-1])


class TransMambaEmbeddings(nn.Module):
    """Patches + optional class token + learned positions.

    Positions are stored as ViT stores them (class token first, then the patch grid) so they copy from a
    teacher unchanged; the class token is then moved to the middle of the sequence, as ViM reads it.
    """

    def __init__(self, config: TransMambaConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = TransMambaPatchEmbeddings(config)
        extra = 1 if config.use_cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if extra else None
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.grid_size**2 + extra, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _positions(self, height: int, width: int, interpolate: bool) -> torch.Tensor:
        grid = self.config.grid_size
        if (height, width) == (grid, grid):
            return self.position_embeddings
        if not interpolate:
            size = self.config.image_size
            raise ValueError(
                f"Input image size ({height * self.config.patch_size}x{width * self.config.patch_size}) doesn't "
                f"match the model's ({size}x{size}); pass interpolate_pos_encoding=True to resize the position "
                "embeddings."
            )
        extra = 1 if self.cls_token is not None else 0
        head, patches = self.position_embeddings[:, :extra], self.position_embeddings[:, extra:]
        patches = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches.float(), size=(height, width), mode="bicubic", align_corners=False)
        patches = patches.to(head.dtype).permute(0, 2, 3, 1).reshape(1, height * width, -1)
        return torch.cat([head, patches], dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False):
        tokens, (height, width) = self.patch_embeddings(pixel_values)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self._positions(height, width, interpolate_pos_encoding)
        if self.cls_token is not None:
            middle = (tokens.shape[1] - 1) // 2
            tokens = torch.cat([tokens[:, 1 : middle + 1], tokens[:, :1], tokens[:, middle + 1 :]], dim=1)
        return self.dropout(tokens), (height, width)


def cls_token_index(num_patches: int) -> int:
    """Where ViM puts the class token: after the first half of the patches."""
    return num_patches // 2


class TransMambaMLP(nn.Module):
    def __init__(self, config: TransMambaConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.mlp_hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.rate)
        return x * keep / (1.0 - self.rate)


class TransMambaLayer(GradientCheckpointingLayer):
    """``x + Mixer(LN(x))`` then ``x + MLP(LN(x))``: a ViT block with attention swapped for the mixer."""

    def __init__(self, config: TransMambaConfig, drop_path: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mixer = TransMambaMixer(config)
        self.drop_path = DropPath(drop_path)
        if config.mlp_ratio > 0:
            self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.mlp = TransMambaMLP(config)
        else:
            self.layernorm_after, self.mlp = None, None

    def forward(self, hidden_states: torch.Tensor, grid: tuple[int, int], output_direction_outputs: bool = False):
        mixed, directions = self.mixer(self.layernorm_before(hidden_states), grid, output_direction_outputs)
        hidden_states = hidden_states + self.drop_path(mixed)
        if self.mlp is not None:
            hidden_states = hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, directions


class TransMambaPreTrainedModel(PreTrainedModel):
    config_class = TransMambaConfig
    config: TransMambaConfig
    base_model_prefix = "transmamba"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransMambaEmbeddings", "TransMambaLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransMambaMixer):
            module.reset_ssm_parameters()
        elif isinstance(module, TransMambaEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, std=self.config.initializer_range)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over ``depth`` blocks (the DeiT/ViM/VMamba ramp)."""
    return [rate * i / max(1, depth - 1) for i in range(depth)]


def output_flags(config, output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
    """``output_hidden_states`` and ``return_dict``, the config's where the caller left them None."""
    hidden = config.output_hidden_states if output_hidden_states is None else output_hidden_states
    return bool(hidden), config.return_dict if return_dict is None else return_dict


class EncoderMixin:
    """The isotropic encoders' body (image and video): embeddings, the blocks, a final norm, a pooled token.
    A family names its input (``input_shape``), how the embeddings' grid reads to the scans (`scan_grid`) and
    what it pools (`pool`)."""

    input_shape = "(batch, channels, height, width)"

    def init_encoder(self, config, embeddings: nn.Module) -> None:
        self.embeddings = embeddings
        rates = drop_path_rates(config.drop_path_rate, config.num_hidden_layers)
        self.layers = nn.ModuleList([TransMambaLayer(config, rate) for rate in rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def scan_grid(self, grid: tuple[int, ...]) -> tuple[int, int]:
        return grid

    def pool(self, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.config.pooling == "cls":
            return hidden[:, cls_token_index(grid[0] * grid[1])]
        return hidden.mean(dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_direction_outputs: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> TransMambaModelOutput | tuple:
        if pixel_values is None:
            raise ValueError(f"pixel_values is required: a {self.input_shape} tensor.")
        output_hidden_states, return_dict = output_flags(self.config, output_hidden_states, return_dict)
        hidden, grid = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        grid = self.scan_grid(grid)
        all_hidden = [hidden] if output_hidden_states else None
        all_directions = [] if output_direction_outputs else None
        for layer in self.layers:
            hidden, directions = layer(hidden, grid, bool(output_direction_outputs))
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_directions is not None:
                all_directions.append(directions)
        hidden = self.layernorm(hidden)
        output = TransMambaModelOutput(
            last_hidden_state=hidden,
            pooler_output=self.pool(hidden, grid),
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            direction_outputs=tuple(all_directions) if all_directions is not None else None,
        )
        return output if return_dict else output.to_tuple()


class TransMambaModel(EncoderMixin, TransMambaPreTrainedModel):
    def __init__(self, config: TransMambaConfig):
        super().__init__(config)
        self.init_encoder(config, TransMambaEmbeddings(config))


class ClassifierMixin:
    """What every family's classifier shares: a linear head (``classifier``) on the encoder's ``pooler_output``
    and the task loss. The encoder is the attribute named ``base_model_prefix`` (checkpoint names unchanged)."""

    output_class: type[ModelOutput] = TransMambaImageClassifierOutput

    def init_classifier(self, config, encoder: nn.Module) -> None:
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, encoder)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_direction_outputs: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = getattr(self, self.base_model_prefix)(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_direction_outputs=output_direction_outputs,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = self.output_class(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, direction_outputs=outputs.direction_outputs
        )
        return output if return_dict else output.to_tuple()


class TransMambaForImageClassification(ClassifierMixin, TransMambaPreTrainedModel):
    def __init__(self, config: TransMambaConfig):
        super().__init__(config)
        self.init_classifier(config, TransMambaModel(config))


__all__ = [
    "TransMambaForImageClassification",
    "TransMambaModel",
    "TransMambaPreTrainedModel",
    "TransMambaModelOutput",
    "TransMambaImageClassifierOutput",
]
