"""Configuration of TransLlavaMamba: LLaVA's vision tower and projector in front of a LLaMA-shaped Mamba LM."""

from __future__ import annotations

import math

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec


class TransLlavaMambaTextConfig(PretrainedConfig):
    """A LLaMA- or Gemma-3-shaped decoder with every attention block replaced by a causal selective-SSM mixer.

    Field names follow ``LlamaConfig`` (so a LLaMA teacher's norms, MLPs, embeddings and head copy in by name)
    plus the Mamba-1 mixer's: ``state_size``, ``expand`` (mixer width = ``expand * hidden_size`` unless
    ``mixer_size`` sets it, e.g. to a teacher's ``heads * head_dim`` so its ``o_proj`` fits ``out_proj`` exactly),
    ``conv_kernel``, ``time_step_rank``. ``cross_mamba_layers`` lists the layers whose mixer also reads the
    image tokens through Cross-Mamba (see ``mamba_lm.TransLlavaMambaMixer``).

    Gemma-3 teachers need four more fields so that their copied weights mean the same thing (the defaults are
    LLaMA's): ``norm_offset`` (RMSNorm scales by ``norm_offset + weight``; Gemma 1.0), ``embedding_scale`` (token
    embeddings are multiplied by it; Gemma sqrt(teacher hidden size)), ``sandwich_norms`` (Gemma's extra norms
    after the mixer and around the MLP) and ``final_logit_softcapping`` (``cap * tanh(logits / cap)``).
    """

    model_type = "transllava_mamba_text"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 2048,
        intermediate_size: int = 8192,
        num_hidden_layers: int = 16,
        hidden_act: str = "silu",
        mlp_bias: bool = False,
        rms_norm_eps: float = 1e-5,
        state_size: int = 16,
        expand: int = 2,
        mixer_size: int | None = None,
        conv_kernel: int = 4,
        time_step_rank: int | str = "auto",
        out_proj_bias: bool = False,
        cross_mamba_layers: list[int] | None = None,
        initializer_range: float = 0.02,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        scan_backend: str = "auto",
        norm_offset: float = 0.0,
        embedding_scale: float = 1.0,
        sandwich_norms: bool = False,
        final_logit_softcapping: float | None = None,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.hidden_act = hidden_act
        self.mlp_bias = mlp_bias
        self.rms_norm_eps = rms_norm_eps
        self.state_size = state_size
        self.expand = expand
        self.mixer_size = int(mixer_size) if mixer_size else expand * hidden_size
        self.conv_kernel = conv_kernel
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else int(time_step_rank)
        self.out_proj_bias = out_proj_bias
        self.cross_mamba_layers = sorted(cross_mamba_layers or [])
        self.initializer_range = initializer_range
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.scan_backend = scan_backend
        self.norm_offset = float(norm_offset)
        self.embedding_scale = float(embedding_scale)
        self.sandwich_norms = bool(sandwich_norms)
        self.final_logit_softcapping = final_logit_softcapping
        self.use_cache = use_cache
        self.tie_word_embeddings = tie_word_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(**kwargs)
        bad = [i for i in self.cross_mamba_layers if not 0 <= i < num_hidden_layers]
        if bad:
            raise ValueError(
                f"cross_mamba_layers {bad} are outside 0..{num_hidden_layers - 1}; list layer indices of this "
                f"{num_hidden_layers}-layer language model."
            )


class TransLlavaMambaConfig(PretrainedConfig):
    """Composite config shaped like ``LlavaConfig``: ``vision_config`` (any vision config, CLIP by default),
    ``text_config`` (a ``TransLlavaMambaTextConfig``) and the projector / feature-selection fields.

    ``projector_type`` "mlp" is LLaVA's two-layer MLP on ``hidden_states[vision_feature_layer]``; "gemma3" is
    Gemma-3's (``Gemma3ForConditionalGeneration``): the vision tower's ``last_hidden_state`` average-pooled to
    ``mm_tokens_per_image`` tokens, RMS-normed, times one matrix.
    """

    model_type = "transllava_mamba"
    attribute_map = {"image_token_id": "image_token_index"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=TransLlavaMambaTextConfig),
    }

    def __init__(
        self,
        vision_config: dict | PretrainedConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        image_token_index: int = 32000,
        image_seq_length: int = 576,
        projector_hidden_act: str = "gelu",
        vision_feature_select_strategy: str = "default",
        vision_feature_layer: int | list[int] = -2,
        multimodal_projector_bias: bool = True,
        projector_type: str = "mlp",
        mm_tokens_per_image: int = 256,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        if projector_type not in ("mlp", "gemma3"):
            raise ValueError(f"projector_type must be 'mlp' (LLaVA) or 'gemma3', got {projector_type!r}.")
        self.projector_type = projector_type
        self.mm_tokens_per_image = mm_tokens_per_image
        self.vision_config = vision_config
        self.text_config = text_config
        self.image_token_index = image_token_index
        self.image_seq_length = image_seq_length
        self.projector_hidden_act = projector_hidden_act
        if vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' (drop the class token) or 'full', got "
                f"{vision_feature_select_strategy!r}."
            )
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.vision_feature_layer = vision_feature_layer
        self.multimodal_projector_bias = multimodal_projector_bias
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)
        if not self.tie_word_embeddings and self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True

    @property
    def cross_mamba_layers(self) -> list[int]:
        return self.text_config.cross_mamba_layers
