"""CLIP4Clip-style text-video retrieval: a TransVideoMamba video tower and any `transformers` text tower,
each pooled and projected into one space, trained with a symmetric InfoNCE loss; one `PreTrainedModel`, so
``save_pretrained`` / ``from_pretrained`` carry both towers (and the code, as remote code)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_video_retrieval import TransVideoTextRetrievalConfig
from .mixer import TransMambaMixer
from .modeling_videomamba import TransVideoMambaEmbeddings, TransVideoMambaModel

MAX_LOGIT_SCALE = 4.6052  # ln(100), CLIP's clamp


def symmetric_info_nce(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Mean of text->video and video->text cross-entropy; pair i is the positive of row and column i."""
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


@dataclass
class VideoTextRetrievalOutput(ModelOutput):
    """``logits_per_text[i, j]``: scaled cosine of text i and video j. ``video_pooled``: the video tower's pooled
    feature before the projection, and ``video_last_hidden_state`` its tokens ``[cls, (t n)]`` (what distillation
    targets are compared with)."""

    loss: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    logits_per_video: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    video_pooled: torch.Tensor | None = None
    direction_outputs: tuple[torch.Tensor, ...] | None = None
    video_last_hidden_state: torch.Tensor | None = None


class TransMambaForVideoTextRetrieval(PreTrainedModel):
    config_class = TransVideoTextRetrievalConfig
    config: TransVideoTextRetrievalConfig
    base_model_prefix = "video_text"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransVideoMambaEmbeddings", "TransMambaLayer"]

    def __init__(self, config: TransVideoTextRetrievalConfig):
        super().__init__(config)
        self.video_model = TransVideoMambaModel(config.vision_config)
        try:  # BERT-like encoders: no pooler (the text is mean-pooled here), so no unused weights
            self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        except TypeError:
            self.text_model = AutoModel.from_config(config.text_config)
        self.video_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        if config.freeze_text_model:
            self.text_model.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransMambaMixer):
            module.reset_ssm_parameters()
        elif isinstance(module, TransVideoMambaEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=self.config.vision_config.initializer_range)
            init.trunc_normal_(module.cls_token, std=self.config.vision_config.initializer_range)
            init.zeros_(module.temporal_position_embeddings)
        elif module is self:
            init.constant_(self.logit_scale, self.config.logit_scale_init_value)

    def train(self, mode: bool = True) -> TransMambaForVideoTextRetrieval:
        """A frozen text tower stays in eval mode (no dropout), so its features are the pretrained encoder's."""
        super().train(mode)
        if self.config.freeze_text_model:
            self.text_model.eval()
        return self

    def get_video_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, output_direction_outputs=False
    ) -> tuple[torch.Tensor, torch.Tensor, ModelOutput]:
        """(projected embedding, pooled feature, the video tower's whole output)."""
        out = self.video_model(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_direction_outputs=output_direction_outputs,
            return_dict=True,
        )
        pooled = out.pooler_output if self.config.video_pooling == "cls" else out.last_hidden_state.mean(1)
        return self.video_projection(pooled), pooled, out

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **text_inputs
    ) -> torch.Tensor:
        """Pooled (masked mean or first token) and projected text features."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text_model):
            tokens = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **text_inputs)[0]
        if self.config.text_pooling == "cls":
            pooled = tokens[:, 0]
        else:
            mask = attention_mask[..., None].to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.text_projection(pooled)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        output_direction_outputs: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> VideoTextRetrievalOutput | tuple:
        if pixel_values is None or input_ids is None:
            raise ValueError("Retrieval needs both pixel_values (videos) and input_ids (their captions).")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        video, pooled, tower = self.get_video_features(
            pixel_values, interpolate_pos_encoding, bool(output_direction_outputs)
        )
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        text = self.get_text_features(input_ids, attention_mask, **extra)
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
        logits_per_text = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * text @ video.t()
        loss = symmetric_info_nce(logits_per_text) if return_loss else None
        output = VideoTextRetrievalOutput(
            loss=loss,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text,
            video_embeds=video,
            video_pooled=pooled,
            direction_outputs=tower.direction_outputs,
            video_last_hidden_state=tower.last_hidden_state,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["TransMambaForVideoTextRetrieval", "VideoTextRetrievalOutput", "symmetric_info_nce"]
