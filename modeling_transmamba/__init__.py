"""TransMamba vision students as `transformers` models, registered with the Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_transmamba import PRESETS, TransMambaConfig
from .modeling_transmamba import (
    TransMambaForImageClassification,
    TransMambaImageClassifierOutput,
    TransMambaModel,
    TransMambaModelOutput,
    TransMambaPreTrainedModel,
)
from .selective_scan import selective_scan, selective_scan_chunked, selective_scan_sequential, selective_state_step

AutoConfig.register(TransMambaConfig.model_type, TransMambaConfig, exist_ok=True)
AutoModel.register(TransMambaConfig, TransMambaModel, exist_ok=True)
AutoModelForImageClassification.register(TransMambaConfig, TransMambaForImageClassification, exist_ok=True)
# Saved folders carry their code and an `auto_map`, so they load with trust_remote_code=True anywhere.
TransMambaConfig.register_for_auto_class()
TransMambaModel.register_for_auto_class("AutoModel")
TransMambaForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "PRESETS",
    "TransMambaConfig",
    "TransMambaForImageClassification",
    "TransMambaImageClassifierOutput",
    "TransMambaModel",
    "TransMambaModelOutput",
    "TransMambaPreTrainedModel",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_state_step",
]
