"""Configuration of the TransVideoMamba students (VideoMamba-style: tubelets, class token first, `(t n)` scan).

A sibling of :class:`TransMambaConfig` rather than more ``PRESETS`` entries: a video student has its own
``model_type`` (so `AutoModelForVideoClassification` maps it and a saved folder names the video classes in its
``auto_map``), two more shape fields (``num_frames``, ``tubelet_size``) and a fixed layout (class token first, 1-D
bidirectional scan). Subclassing keeps every mixer/block field, so the image blocks and mixer are reused unchanged.
"""

from __future__ import annotations

from .configuration_transmamba import VIM_LAYOUT, TransMambaConfig

# VideoMamba (OpenGVLab): 24 bidirectional Mamba blocks, widths 192 / 384, patch 16, 8 frames, tubelet 1. Our
# blocks carry an MLP (mlp_ratio 4) so a ViT's MLPs subclone into them; mlp_ratio=0 gives the original block.
_VIDEOMAMBA = dict(VIM_LAYOUT, num_frames=8, tubelet_size=1)  # ViM's blocks and class token, over (t n) tokens
VIDEO_PRESETS: dict[str, dict] = {
    "videomamba-t": dict(_VIDEOMAMBA, hidden_size=192),
    "videomamba-s": dict(_VIDEOMAMBA, hidden_size=384),
}

VIDEO_AUTO_MAP = {
    "AutoConfig": "configuration_videomamba.TransVideoMambaConfig",
    "AutoModel": "modeling_videomamba.TransVideoMambaModel",
    "AutoModelForVideoClassification": "modeling_videomamba.TransMambaForVideoClassification",
}


class TransVideoMambaConfig(TransMambaConfig):
    """A video student: ``num_frames`` frames cut into tubelets of ``tubelet_size`` frames × ``patch_size``².

    Tokens are ``[cls, (t n)]``: the class token first, then frame by frame (tubelet by tubelet), raster order
    within a frame; the mixers scan that sequence forward and backward (``scan_directions``). Only 1-D directions
    and a class-token head make sense here, so the image options that contradict this are refused.
    """

    model_type = "transvideomamba"

    def __init__(self, num_frames: int = 8, tubelet_size: int = 1, **kwargs):
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        for key, value in _VIDEOMAMBA.items():
            if key not in ("num_frames", "tubelet_size", "num_hidden_layers"):
                kwargs.setdefault(key, value)
        kwargs.setdefault("auto_map", dict(VIDEO_AUTO_MAP))
        super().__init__(**kwargs)

    @property
    def temporal_size(self) -> int:
        """Tubelets along time: the length of the temporal position table."""
        return self.num_frames // self.tubelet_size

    def validate_shape(self) -> None:
        super().validate_shape()
        if self.tubelet_size < 1 or self.num_frames < 1 or self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames {self.num_frames} is not divisible by tubelet_size {self.tubelet_size}; use a frame "
                f"count that is a multiple of {self.tubelet_size} (e.g. {max(1, self.tubelet_size) * 4})."
            )
        if list(self.scan_directions) not in (["forward", "backward"], ["forward"], ["backward"]):
            raise ValueError(
                f"A video student scans its (t n) token sequence in 1-D; scan_directions must be forward and/or "
                f"backward, got {self.scan_directions}."
            )
        if not self.use_cls_token or self.pooling != "cls" or self.conv_dim != 1:
            raise ValueError("A video student reads its class token (use_cls_token=True, pooling='cls', conv_dim=1).")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TransVideoMambaConfig:
        """Build ``videomamba-t`` / ``videomamba-s`` with optional field overrides."""
        if name not in VIDEO_PRESETS:
            raise ValueError(f"Unknown video student preset {name!r}; choose one of {', '.join(VIDEO_PRESETS)}.")
        return cls(**{**VIDEO_PRESETS[name], **overrides})
