"""Configuration of the CLIP4Clip-style text-video retrieval model: a TransVideoMamba tower and a text tower."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_videomamba import TransVideoMambaConfig

TEXT_POOLINGS = ("mean", "cls")
VIDEO_POOLINGS = ("mean", "cls")
RETRIEVAL_AUTO_MAP = {
    "AutoConfig": "configuration_video_retrieval.TransVideoTextRetrievalConfig",
    "AutoModel": "modeling_video_retrieval.TransMambaForVideoTextRetrieval",
}


class TransVideoTextRetrievalConfig(PretrainedConfig):
    """``vision_config`` (a :class:`TransVideoMambaConfig`), ``text_config`` (any `transformers` text encoder,
    BERT by default: all-MiniLM-L6-v2 offline), both projected to ``projection_dim`` and compared by cosine.

    ``video_pooling``: "mean" (mean of all video tokens after the final norm, CLIP4Clip's meanP over space and
    time; the default, since a class token read at the start of the forward scan sees the clip only through the
    backward scan) or "cls" (the student's classification read-out).
    ``text_pooling``: "mean" (masked mean of the tokens, as sentence-transformers trains MiniLM) or "cls".
    ``freeze_text_model`` keeps the text tower frozen and in eval mode (CLIP4Clip fine-tunes it; on a CPU budget
    the pretrained sentence encoder stays fixed and only its projection trains).
    """

    model_type = "transvideomamba_retrieval"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=TransVideoMambaConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    def __init__(
        self,
        vision_config: dict | PretrainedConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        projection_dim: int = 256,
        logit_scale_init_value: float = 2.6592,
        video_pooling: str = "mean",
        text_pooling: str = "mean",
        freeze_text_model: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {', '.join(TEXT_POOLINGS)}, got {text_pooling!r}.")
        if video_pooling not in VIDEO_POOLINGS:
            raise ValueError(f"video_pooling must be one of {', '.join(VIDEO_POOLINGS)}, got {video_pooling!r}.")
        if projection_dim < 1:
            raise ValueError(f"projection_dim must be at least 1, got {projection_dim}.")
        self.vision_config = vision_config
        self.text_config = text_config
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.video_pooling = video_pooling
        self.text_pooling = text_pooling
        self.freeze_text_model = freeze_text_model
        self.initializer_range = initializer_range
        kwargs.setdefault("auto_map", dict(RETRIEVAL_AUTO_MAP))
        super().__init__(**kwargs)
