"""TransVideoMamba: VideoMamba-style video students as `transformers` models.

Conv3d tubelets → ``[cls, (t n)]`` tokens (class token first, frame by frame, raster order within a frame) with
spatial + temporal position embeddings → the image students' Transformer-shaped blocks, whose mixers scan the
sequence forward and backward (1-D scan orders, so the fused token kernel runs unchanged) → final norm → the
class token. Input is ``pixel_values`` of shape (batch, frames, channels, height, width), as VideoMAE/TimeSformer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_videomamba import TransVideoMambaConfig
from .mixer import TransMambaMixer
from .modeling_transmamba import ClassifierMixin, EncoderMixin, TransMambaImageClassifierOutput


@dataclass
class TransVideoMambaClassifierOutput(TransMambaImageClassifierOutput):
    """Same fields as the image classifier's: loss, logits, hidden_states, direction_outputs."""


class TransVideoMambaTubeletEmbeddings(nn.Module):
    """Conv3d over (tubelet_size, patch, patch) blocks; its weights inflate from a ViT's 2-D patch embedding."""

    def __init__(self, config: TransVideoMambaConfig):
        super().__init__()
        self.num_channels, self.patch_size = config.num_channels, config.patch_size
        self.tubelet_size = config.tubelet_size
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.projection = nn.Conv3d(config.num_channels, config.hidden_size, kernel, kernel)

    def check(self, pixel_values: torch.Tensor) -> None:
        """One clear message per malformed clip, before any compute."""
        if pixel_values.dim() != 5:
            hint = (
                " A 4-D tensor is one image per sample: add a frame axis (pixel_values[:, None]) or use an image "
                "model (TransMambaForImageClassification)."
                if pixel_values.dim() == 4
                else ""
            )
            raise ValueError(
                f"Expected pixel_values of shape (batch, frames, {self.num_channels}, height, width), got a "
                f"{pixel_values.dim()}-D tensor of shape {tuple(pixel_values.shape)}.{hint}"
            )
        frames, channels, height, width = pixel_values.shape[1:]
        if channels != self.num_channels:
            raise ValueError(
                f"Expected {self.num_channels} channels at dim 2 of (batch, frames, channels, height, width), got "
                f"shape {tuple(pixel_values.shape)}; the video processor returns this layout."
            )
        if frames % self.tubelet_size:
            usable = frames - frames % self.tubelet_size or self.tubelet_size
            raise ValueError(
                f"The clip has {frames} frames, not divisible by the tubelet size {self.tubelet_size}; sample a "
                f"multiple of {self.tubelet_size} frames (e.g. {usable})."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Frame size {height}x{width} is not divisible by the patch size {self.patch_size}; resize or crop "
                f"to a multiple of {self.patch_size} (the video processor does this)."
            )

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(batch, frames, C, H, W) -> tokens (batch, t, n, hidden) and the (t, h, w) tubelet grid."""
        self.check(pixel_values)
        video = pixel_values.to(self.projection.weight.dtype).transpose(1, 2)  # (batch, C, frames, H, W)
        patches = self.projection(video)  # (batch, hidden, t, h, w)
        t, h, w = patches.shape[2:]
        return patches.flatten(3).permute(0, 2, 3, 1), (t, h, w)


class TransVideoMambaEmbeddings(nn.Module):
    """Tubelets + class token + positions: spatial (ViT layout ``[cls, grid]``, copied from an image teacher) and
    temporal (one per tubelet, zero at subcloning, so a static clip starts as the teacher's frames); the class
    token takes the spatial ``cls`` position only, as in VideoMamba."""

    def __init__(self, config: TransVideoMambaConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = TransVideoMambaTubeletEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.grid_size**2 + 1, config.hidden_size))
        self.temporal_position_embeddings = nn.Parameter(torch.zeros(1, config.temporal_size, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _spatial(self, height: int, width: int, interpolate: bool) -> torch.Tensor:
        grid = self.config.grid_size
        table = self.position_embeddings
        if (height, width) == (grid, grid):
            return table
        if not interpolate:
            size, patch = self.config.image_size, self.config.patch_size
            raise ValueError(
                f"Frame size ({height * patch}x{width * patch}) doesn't match the model's ({size}x{size}); pass "
                "interpolate_pos_encoding=True to resize the position embeddings."
            )
        patches = table[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2).float()
        patches = F.interpolate(patches, size=(height, width), mode="bicubic", align_corners=False)
        patches = patches.to(table.dtype).permute(0, 2, 3, 1).reshape(1, height * width, -1)
        return torch.cat([table[:, :1], patches], dim=1)

    def _temporal(self, length: int, interpolate: bool) -> torch.Tensor:
        table = self.temporal_position_embeddings
        if length == table.shape[1]:
            return table
        if not interpolate:
            frames = length * self.config.tubelet_size
            raise ValueError(
                f"The clip has {frames} frames but the model was built for {self.config.num_frames}; pass "
                "interpolate_pos_encoding=True to resize the temporal position embeddings."
            )
        resized = F.interpolate(table.float().transpose(1, 2), size=length, mode="linear", align_corners=False)
        return resized.transpose(1, 2).to(table.dtype)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False):
        tokens, (t, h, w) = self.patch_embeddings(pixel_values)  # (batch, t, n, hidden)
        spatial = self._spatial(h, w, interpolate_pos_encoding)
        temporal = self._temporal(t, interpolate_pos_encoding)
        tokens = tokens + spatial[:, None, 1:] + temporal[:, :, None]
        cls = (self.cls_token + spatial[:, :1]).expand(tokens.shape[0], -1, -1)
        sequence = torch.cat([cls, tokens.flatten(1, 2)], dim=1)  # [cls, (t n)]
        return self.dropout(sequence), (t, h, w)


class TransVideoMambaPreTrainedModel(PreTrainedModel):
    config_class = TransVideoMambaConfig
    config: TransVideoMambaConfig
    # The image students' prefix: the blocks' state-dict keys match theirs, so image subcloning helpers fill them.
    base_model_prefix = "transmamba"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransVideoMambaEmbeddings", "TransMambaLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransMambaMixer):
            module.reset_ssm_parameters()
        elif isinstance(module, TransVideoMambaEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
            init.zeros_(module.temporal_position_embeddings)


class TransVideoMambaModel(EncoderMixin, TransVideoMambaPreTrainedModel):
    """The encoder: ``last_hidden_state`` is ``[cls, (t n)]``; ``pooler_output`` the class token after the norm."""

    input_shape = "(batch, frames, channels, height, width)"

    def __init__(self, config: TransVideoMambaConfig):
        super().__init__(config)
        self.init_encoder(config, TransVideoMambaEmbeddings(config))

    def scan_grid(self, grid: tuple[int, int, int]) -> tuple[int, int]:
        t, h, w = grid
        return t * h, w  # 1-D scans read only the length; the grid names the (t n) layout

    def pool(self, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return hidden[:, 0]


class TransMambaForVideoClassification(ClassifierMixin, TransVideoMambaPreTrainedModel):
    output_class = TransVideoMambaClassifierOutput

    def __init__(self, config: TransVideoMambaConfig):
        super().__init__(config)
        self.init_classifier(config, TransVideoMambaModel(config))


__all__ = [
    "TransMambaForVideoClassification",
    "TransVideoMambaClassifierOutput",
    "TransVideoMambaModel",
    "TransVideoMambaPreTrainedModel",
]
