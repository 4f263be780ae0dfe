"""Configuration of the hierarchical TransMamba students (VMamba-style: 4 stages, SS2D cross-scan mixers).

A sibling of ``TransMambaConfig`` rather than a preset of it: an isotropic config has one width, one depth, one
patch grid and position embeddings, a hierarchical one has a width and depth per stage, a stem and downsampling
and no position embeddings. Each stage's mixer is still the shared ``TransMambaMixer``: ``stage_mixer_config(i)``
builds the ``TransMambaConfig`` it reads, so the SS2D orders run in the same fused scan as the other families.
"""

from __future__ import annotations

try:  # transformers >= 5.x moved the mixins; older 5.x / 4.x keep them under utils
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover - depends on the installed transformers
    from transformers.utils.backbone_utils import BackboneConfigMixin
from transformers import PretrainedConfig

from .configuration_transmamba import MIXER_FIELDS, MODEL_FIELDS, TransMambaConfig, store_fields
from .scan_orders import SS2D_DIRECTIONS

_VMAMBA = dict(
    patch_size=4,
    scan_directions=list(SS2D_DIRECTIONS),
    share_ssm_params=False,
    conv_kernel=3,
    mlp_ratio=4.0,
)
# VMamba-T/S (MzeroMiko/VMamba): widths 96..768, depths [2, 2, 9, 2] / [2, 2, 27, 2], d_state 16, expand 2.
VMAMBA_PRESETS: dict[str, dict] = {
    "vmamba-t": dict(_VMAMBA, hidden_sizes=[96, 192, 384, 768], depths=[2, 2, 9, 2]),
    "vmamba-s": dict(_VMAMBA, hidden_sizes=[96, 192, 384, 768], depths=[2, 2, 27, 2]),
}

VMAMBA_AUTO_MAP = {
    "AutoConfig": "configuration_vmamba.TransVMambaConfig",
    "AutoModel": "modeling_vmamba.TransVMambaModel",
    "AutoModelForImageClassification": "modeling_vmamba.TransVMambaForImageClassification",
    "AutoBackbone": "modeling_vmamba.TransVMambaBackbone",
}


class TransVMambaConfig(BackboneConfigMixin, PretrainedConfig):
    """Shape of a hierarchical Mamba student: a ``patch_size`` stem, then stages of ``depths[i]`` blocks at width
    ``hidden_sizes[i]``, joined by 2x2 patch merging (so stage i sees the image at stride ``patch_size * 2**i``).

    Blocks are ``x + SS2D(LN(x))`` then ``x + MLP(LN(x))`` (``mlp_ratio=0``: no MLP, VMamba v0). SS2D: in_proj to
    (x, z), depthwise ``conv_kernel`` conv + SiLU, one scan per ``scan_directions`` entry with its own x/dt
    projections, A and D, the scans summed at raster positions, LayerNorm, gate SiLU(z), out_proj. Backbone
    stages are ``stem, stage1..stageN``; ``out_features``/``out_indices`` pick which ones ``AutoBackbone`` returns.
    ``hidden_size`` (the pooled width) and ``num_hidden_layers`` (all blocks) mirror ``TransMambaConfig``.
    ``out_proj_bias`` defaults to True (VMamba has none) so a teacher's attention output bias has a home.
    """

    model_type = "transvmamba"
    family = "VMamba"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 4,
        num_channels: int = 3,
        hidden_sizes: list[int] | None = None,
        depths: list[int] | None = None,
        mlp_ratio: float = 4.0,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        state_size: int = 16,
        expand: int = 2,
        conv_kernel: int = 3,
        scan_directions: list[str] | None = None,
        share_ssm_params: bool = False,
        in_proj_bias: bool = False,
        out_proj_bias: bool = True,
        conv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        scan_backend: str = "auto",
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs,
    ):
        store_fields(self, locals(), (*MIXER_FIELDS, *MODEL_FIELDS))
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else [96, 192, 384, 768]
        self.depths = list(depths) if depths is not None else [2, 2, 9, 2]
        self.scan_directions = list(scan_directions) if scan_directions is not None else list(SS2D_DIRECTIONS)
        kwargs.setdefault("auto_map", dict(VMAMBA_AUTO_MAP))
        super().__init__(**kwargs)
        self.validate_shape()
        self.stage_names = ["stem"] + [f"stage{i + 1}" for i in range(len(self.depths))]
        if out_features is not None and any(name not in self.stage_names for name in out_features):
            unknown = [name for name in out_features if name not in self.stage_names]
            raise ValueError(
                f"out_features {unknown} name no stage of this model; choose from {', '.join(self.stage_names)} "
                "(in that order)."
            )
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)

    @property
    def hidden_size(self) -> int:
        return self.hidden_sizes[-1]

    @property
    def num_hidden_layers(self) -> int:
        return sum(self.depths)

    @property
    def num_directions(self) -> int:
        return len(self.scan_directions)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def total_stride(self) -> int:
        """The image side must be a multiple of this: the stem, then a 2x2 merge before every later stage."""
        return self.patch_size * 2 ** (self.num_stages - 1)

    def stage_grid(self, stage: int, image_size: int | None = None) -> int:
        """Token-grid side of ``stage`` (0-based) for a square image."""
        return (image_size or self.image_size) // (self.patch_size * 2**stage)

    def stage_strides(self) -> list[int]:
        return [self.patch_size * 2**i for i in range(self.num_stages)]

    def validate_shape(self) -> None:
        """Refuse contradictory settings here, before any weights exist."""
        if len(self.hidden_sizes) != len(self.depths) or not self.depths:
            raise ValueError(
                f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must list one width and one depth per "
                "stage."
            )
        if any(d < 1 for d in self.depths) or any(w < 1 for w in self.hidden_sizes):
            raise ValueError(f"Every stage needs depth >= 1 and width >= 1; got {self.depths} / {self.hidden_sizes}.")
        if self.image_size % self.total_stride:
            raise ValueError(image_size_message(self, self.image_size, self.image_size))
        self.stage_mixer_config(0)  # the mixer's own checks (scan directions, ...)

    def stage_mixer_config(self, stage: int) -> TransMambaConfig:
        """The ``TransMambaConfig`` that stage ``stage``'s mixers and MLPs read (its width; SS2D options)."""
        return TransMambaConfig(
            **{name: getattr(self, name) for name in MIXER_FIELDS},
            hidden_size=self.hidden_sizes[stage],
            num_hidden_layers=self.depths[stage],
            conv_dim=2,
            scan_directions=self.scan_directions,
            direction_aware_update=False,
            combine_directions="sum",
            mixer_out_norm=True,
        )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TransVMambaConfig:
        """Build a named student (``vmamba-t``, ``vmamba-s``) with optional field overrides."""
        if name not in VMAMBA_PRESETS:
            raise ValueError(f"Unknown VMamba preset {name!r}; choose one of {', '.join(VMAMBA_PRESETS)}.")
        return cls(**{**VMAMBA_PRESETS[name], **overrides})


def image_size_message(config: TransVMambaConfig, height: int, width: int) -> str:
    """The one message for an image the stem and the merges cannot cut evenly."""
    stride = config.total_stride
    lower, upper = max(stride, (height // stride) * stride), (height // stride + 1) * stride
    return (
        f"Image size {height}x{width} does not survive the downsampling: the {config.patch_size}x{config.patch_size} "
        f"stem and {config.num_stages - 1} 2x2 patch merges need sides that are multiples of {stride}; resize or "
        f"crop to e.g. {lower} or {upper}."
    )
