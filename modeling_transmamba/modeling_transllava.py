"""TransLlavaMamba as `transformers` models: LLaVA's vision tower and projector, a Mamba language model.

Inputs and outputs are ``LlavaForConditionalGeneration``'s (``input_ids``, ``pixel_values``, ``attention_mask``,
``labels``; each ``config.image_token_id`` placeholder is replaced by one projected image feature), and the
state-dict layout is LLaVA's (``model.vision_tower``, ``model.multi_modal_projector``, ``model.language_model``,
``lm_head``), so a LLaVA teacher's tensors copy in by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_transllava import TransLlavaMambaConfig
from .mamba_lm import (
    RecurrentLMMixin,
    TransLlavaMambaCache,
    TransLlavaMambaLanguageModel,
    TransLlavaMambaMixer,
    TransLlavaMambaRMSNorm,
)


@dataclass
class TransLlavaMambaModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: TransLlavaMambaCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None


@dataclass
class TransLlavaMambaCausalLMOutput(ModelOutput):
    """As LLaVA's output; ``cache`` is the recurrent state (fixed size) instead of a growing KV cache."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: TransLlavaMambaCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None


class TransLlavaMambaMultiModalProjector(nn.Module):
    """LLaVA's two-layer MLP projector, same names, so the teacher's copies in unchanged."""

    def __init__(self, config: TransLlavaMambaConfig):
        super().__init__()
        layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        text_hidden, bias = config.text_config.hidden_size, config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * layers, text_hidden, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class TransLlavaMambaGemma3Projector(nn.Module):
    """Gemma-3's projector, same names: average-pool the patch grid to ``mm_tokens_per_image`` tokens, RMSNorm
    (``1 + weight``), then multiply by ``mm_input_projection_weight`` (vision hidden, text hidden)."""

    def __init__(self, config: TransLlavaMambaConfig):
        super().__init__()
        vision = config.vision_config
        self.mm_input_projection_weight = nn.Parameter(torch.zeros(vision.hidden_size, config.text_config.hidden_size))
        self.mm_soft_emb_norm = TransLlavaMambaRMSNorm(vision.hidden_size, vision.layer_norm_eps, offset=1.0)
        self.patches_per_side = vision.image_size // vision.patch_size
        kernel = self.patches_per_side // int(config.mm_tokens_per_image**0.5)
        self.avg_pool = nn.AvgPool2d(kernel_size=kernel, stride=kernel)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        batch, _, hidden = image_features.shape
        grid = image_features.transpose(1, 2).reshape(batch, hidden, self.patches_per_side, self.patches_per_side)
        pooled = self.avg_pool(grid.contiguous()).flatten(2).transpose(1, 2)
        return torch.matmul(self.mm_soft_emb_norm(pooled), self.mm_input_projection_weight).type_as(image_features)


class TransLlavaMambaPreTrainedModel(PreTrainedModel):
    config_class = TransLlavaMambaConfig
    config: TransLlavaMambaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransLlavaMambaDecoderLayer"]
    _is_stateful = True  # no assisted decoding: a recurrent state cannot be rolled back
    # The only attention is the vision tower's (checked on it); the Mamba language model works with any choice.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransLlavaMambaMixer):
            module.reset_ssm_parameters()
        elif isinstance(module, TransLlavaMambaRMSNorm) and module.offset:
            init.zeros_(module.weight)  # scale = offset + weight = 1
        elif isinstance(module, TransLlavaMambaGemma3Projector):
            init.zeros_(module.mm_input_projection_weight)  # as Gemma-3 initialises it


class TransLlavaMambaModel(TransLlavaMambaPreTrainedModel):
    def __init__(self, config: TransLlavaMambaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        projector = (
            TransLlavaMambaGemma3Projector if config.projector_type == "gemma3" else TransLlavaMambaMultiModalProjector
        )
        self.multi_modal_projector = projector(config)
        self.language_model = TransLlavaMambaLanguageModel(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.embed_tokens = value

    def _project_images(
        self, pixel_values: torch.Tensor, feature_layer=None, select_strategy: str | None = None, **kwargs
    ) -> tuple[BaseModelOutputWithPooling, torch.Tensor]:
        """The vision tower's output and the projected features (images, tokens, text hidden) from the configured
        vision layer(s), as LLaVA does (Gemma-3: from the vision tower's last hidden state)."""
        if self.config.projector_type == "gemma3":
            outputs = self.vision_tower(pixel_values, return_dict=True, **kwargs)
            return outputs, self.multi_modal_projector(outputs.last_hidden_state)
        kwargs["output_hidden_states"] = True
        outputs = self.vision_tower(pixel_values, return_dict=True, **kwargs)
        layers = self.config.vision_feature_layer if feature_layer is None else feature_layer
        strategy = select_strategy or self.config.vision_feature_select_strategy
        selected = [outputs.hidden_states[i] for i in ([layers] if isinstance(layers, int) else layers)]
        if strategy == "default":
            selected = [h[:, 1:] for h in selected]  # drop the class token
        return outputs, self.multi_modal_projector(torch.cat(selected, dim=-1))

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """As transformers 5's LLaVA: the vision tower's output with ``pooler_output`` = the projected features, one
        (tokens, hidden) tensor per image in a list (Gemma-3 projector: one (images, tokens, hidden) tensor, as
        Gemma-3 returns). ``return_dict=False`` gives the tuple."""
        outputs, features = self._project_images(pixel_values, vision_feature_layer, vision_feature_select_strategy,
                                                 **kwargs)  # fmt: skip
        outputs.pooler_output = features if self.config.projector_type == "gemma3" else list(features)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return outputs if return_dict else outputs.to_tuple()

    def get_placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(batch, length) bool: where the image placeholder tokens are."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        token = torch.full((), self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: TransLlavaMambaCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TransLlavaMambaModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        use_cache = use_cache if use_cache is not None else (self.config.text_config.use_cache and not self.training)
        if use_cache and cache is None:
            cache = TransLlavaMambaCache(self.config.text_config.num_hidden_layers)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_mask, image_features = None, None
        if pixel_values is not None:
            image_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
            placeholders = int(image_mask.sum())
            expected = placeholders * inputs_embeds.shape[-1]
            if pixel_values.shape[0] == 0 or placeholders % pixel_values.shape[0]:
                raise ValueError(self._count_error(placeholders, pixel_values.shape[0], None))
            image_features = self._project_images(pixel_values)[1]
            if image_features.numel() != expected:
                raise ValueError(self._count_error(placeholders, pixel_values.shape[0], image_features.shape[1]))
            features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask[..., None], features)

        hidden, all_hidden = self.language_model(
            inputs_embeds, image_mask, attention_mask, cache if use_cache else None, output_hidden_states
        )
        output = TransLlavaMambaModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=all_hidden,
            image_hidden_states=image_features,
        )
        return output if return_dict else output.to_tuple()

    def _count_error(self, placeholders: int, images: int, per_image: int | None) -> str:
        per_image = f"{per_image} features each" if per_image is not None else "an equal share each"
        return (
            f"Image features and image tokens do not match: the text has {placeholders} image placeholder tokens "
            f"(id {self.config.image_token_id}) but {images} image(s) were given with {per_image}. Put exactly "
            "that many placeholders per image in the prompt (the processor expands '<image>' for you)."
        )


class TransLlavaMambaForConditionalGeneration(RecurrentLMMixin, TransLlavaMambaPreTrainedModel, GenerationMixin):
    prefill_only = ("pixel_values",)
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: TransLlavaMambaConfig):
        super().__init__(config)
        self.model = TransLlavaMambaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        return self.model.get_image_features(
            pixel_values, vision_feature_layer, vision_feature_select_strategy, **kwargs
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: TransLlavaMambaCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> TransLlavaMambaCausalLMOutput | tuple:
        """``labels`` are shifted inside (as LLaVA's); -100 is ignored. Other keyword arguments go to the loss, as
        in transformers (e.g. ``shift_labels`` already shifted for sequence/context parallelism,
        ``num_items_in_batch`` for gradient accumulation)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits, loss = self.lm_head_and_loss(
            outputs.last_hidden_state, self.config.text_config, logits_to_keep, labels, **kwargs
        )
        output = TransLlavaMambaCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            image_hidden_states=outputs.image_hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "TransLlavaMambaCausalLMOutput",
    "TransLlavaMambaForConditionalGeneration",
    "TransLlavaMambaModel",
    "TransLlavaMambaModelOutput",
    "TransLlavaMambaPreTrainedModel",
]
