"""Configuration of the TransMamba vision students (PlainMamba- and ViM-style)."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from .scan_orders import DIRECTIONS, ONE_D_DIRECTIONS

PLAIN_MAMBA_4 = ["rows", "rows_reversed", "cols", "cols_reversed"]
PLAIN_MAMBA_8 = PLAIN_MAMBA_4 + ["rows_tr", "rows_tr_reversed", "cols_bl", "cols_bl_reversed"]

_PMAMBA = dict(
    num_hidden_layers=12,
    scan_directions=PLAIN_MAMBA_4,
    share_ssm_params=True,
    direction_aware_update=True,
    combine_directions="sum",
    conv_dim=2,
    conv_kernel=7,
    use_cls_token=False,
    pooling="mean",
)
VIM_LAYOUT = dict(
    num_hidden_layers=24,
    scan_directions=["forward", "backward"],
    share_ssm_params=False,
    direction_aware_update=False,
    combine_directions="mean",
    conv_dim=1,
    conv_kernel=4,
    use_cls_token=True,
    pooling="cls",
)
PRESETS: dict[str, dict] = {
    "pmamba-t": dict(_PMAMBA, hidden_size=192),
    "pmamba-s": dict(_PMAMBA, hidden_size=384),
    "pmamba-b": dict(_PMAMBA, hidden_size=768),
    "vim-t": dict(VIM_LAYOUT, hidden_size=192),
    "vim-s": dict(VIM_LAYOUT, hidden_size=384),
}


# Fields the hierarchical config (configuration_vmamba.py) shares with this one under the same names: MIXER_FIELDS
# also go unchanged into each VMamba stage's mixer config, MODEL_FIELDS are read by the model (stochastic depth,
# weight init).
MIXER_FIELDS = (
    "image_size", "patch_size", "num_channels", "mlp_ratio", "hidden_act", "layer_norm_eps", "state_size", "expand",
    "conv_kernel", "share_ssm_params", "in_proj_bias", "out_proj_bias", "conv_bias", "hidden_dropout_prob",
    "time_step_min", "time_step_max", "time_step_floor", "scan_backend",
)  # fmt: skip
MODEL_FIELDS = ("drop_path_rate", "initializer_range")


def store_fields(config: PretrainedConfig, arguments: dict, names: tuple[str, ...]) -> None:
    """Set each of ``names`` on ``config`` from its ``__init__``'s ``arguments`` (``locals()``), unchanged."""
    for name in names:
        setattr(config, name, arguments[name])


# Every saved student names all its entry points, so `AutoModel` (features) and the classifier both load remotely.
REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_transmamba.TransMambaConfig",
    "AutoModel": "modeling_transmamba.TransMambaModel",
    "AutoModelForImageClassification": "modeling_transmamba.TransMambaForImageClassification",
}


class TransMambaConfig(PretrainedConfig):
    """Shape of a Mamba vision student whose blocks mirror a ViT's, so a teacher can be subcloned into it.

    Blocks are ``x + Mixer(LN(x))`` then ``x + MLP(LN(x))``; ``mlp_ratio=0`` drops the MLP (the original Mamba
    block). ``scan_directions`` lists the scan orders of every mixer (see ``scan_orders.py``); with
    ``share_ssm_params`` all directions use one set of x/dt projections, A and D (PlainMamba), otherwise each
    direction owns its set (ViM). ``mixer_out_norm`` puts a LayerNorm on the combined directions before the
    SiLU(z) gate (VMamba's SS2D) instead of gating each direction in the scan. ``scan_backend`` forces a
    selective-scan kernel ("auto" picks the fastest).
    """

    model_type = "transmamba"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 192,
        num_hidden_layers: int = 12,
        mlp_ratio: float = 4.0,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        state_size: int = 16,
        expand: int = 2,
        time_step_rank: int | str = "auto",
        conv_kernel: int = 7,
        conv_dim: int = 2,
        scan_directions: list[str] | None = None,
        share_ssm_params: bool = True,
        direction_aware_update: bool = True,
        combine_directions: str = "sum",
        mixer_out_norm: bool = False,
        use_cls_token: bool = False,
        pooling: str = "mean",
        in_proj_bias: bool = True,
        out_proj_bias: bool = True,
        conv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        scan_backend: str = "auto",
        **kwargs,
    ):
        store_fields(self, locals(), (*MIXER_FIELDS, *MODEL_FIELDS))
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else int(time_step_rank)
        self.conv_dim = conv_dim
        self.scan_directions = list(scan_directions) if scan_directions is not None else list(PLAIN_MAMBA_4)
        self.direction_aware_update = direction_aware_update
        self.combine_directions = combine_directions
        self.mixer_out_norm = mixer_out_norm
        self.use_cls_token = use_cls_token
        self.pooling = pooling
        kwargs.setdefault("auto_map", dict(REMOTE_CODE_AUTO_MAP))
        super().__init__(**kwargs)
        self.validate_shape()

    @property
    def intermediate_size(self) -> int:
        return self.expand * self.hidden_size

    @property
    def num_directions(self) -> int:
        return len(self.scan_directions)

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def validate_shape(self) -> None:
        """Refuse contradictory settings here, before any weights exist."""
        unknown = [d for d in self.scan_directions if d not in DIRECTIONS]
        if unknown or not self.scan_directions:
            raise ValueError(f"Unknown scan directions {unknown}; choose from {', '.join(DIRECTIONS)}.")
        two_d = [d for d in self.scan_directions if d not in ONE_D_DIRECTIONS]
        if self.use_cls_token and (two_d or self.conv_dim == 2):
            raise ValueError(
                "A class token needs 1-D scans and a 1-D conv (ViM); set use_cls_token=False for 2-D scans "
                f"{two_d or ''} or conv_dim=2."
            )
        if self.direction_aware_update and not self.share_ssm_params:
            raise ValueError("direction_aware_update needs share_ssm_params=True (PlainMamba's shared SSM).")
        if self.conv_dim not in (1, 2):
            raise ValueError(f"conv_dim must be 1 or 2, got {self.conv_dim}.")
        if self.combine_directions not in ("sum", "mean"):
            raise ValueError(f"combine_directions must be 'sum' or 'mean', got {self.combine_directions!r}.")
        if self.pooling not in ("mean", "cls") or (self.pooling == "cls" and not self.use_cls_token):
            raise ValueError(f"pooling must be 'mean', or 'cls' with use_cls_token=True; got {self.pooling!r}.")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}; "
                f"use an image size that is a multiple of {self.patch_size}."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TransMambaConfig:
        """Build a named student (``pmamba-t/s/b``, ``vim-t/s``) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown student preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})
