"""TransMamba vision students as `transformers` models, registered with the Auto classes on import."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
)

from .configuration_transllava import TransLlavaMambaConfig, TransLlavaMambaTextConfig
from .configuration_transmamba import PRESETS, TransMambaConfig
from .configuration_transmamba_switch import TransMambaSwitchConfig
from .modeling_transllava import TransLlavaMambaForConditionalGeneration, TransLlavaMambaModel
from .modeling_transmamba import (
    TransMambaForImageClassification,
    TransMambaImageClassifierOutput,
    TransMambaModel,
    TransMambaModelOutput,
    TransMambaPreTrainedModel,
)
from .modeling_transmamba_switch import TransMambaSwitchForCausalLM, TransMambaSwitchModel
from .selective_scan import selective_scan, selective_scan_chunked, selective_scan_sequential, selective_state_step

AutoConfig.register(TransMambaConfig.model_type, TransMambaConfig, exist_ok=True)
AutoModel.register(TransMambaConfig, TransMambaModel, exist_ok=True)
AutoModelForImageClassification.register(TransMambaConfig, TransMambaForImageClassification, exist_ok=True)
# Saved folders carry their code and an `auto_map`, so they load with trust_remote_code=True anywhere.
TransMambaConfig.register_for_auto_class()
TransMambaModel.register_for_auto_class("AutoModel")
TransMambaForImageClassification.register_for_auto_class("AutoModelForImageClassification")
# TransLlavaMamba (vision-language, Mamba language model), registered the same way.
AutoConfig.register(TransLlavaMambaConfig.model_type, TransLlavaMambaConfig, exist_ok=True)
AutoConfig.register(TransLlavaMambaTextConfig.model_type, TransLlavaMambaTextConfig, exist_ok=True)
AutoModel.register(TransLlavaMambaConfig, TransLlavaMambaModel, exist_ok=True)
AutoModelForImageTextToText.register(TransLlavaMambaConfig, TransLlavaMambaForConditionalGeneration, exist_ok=True)
TransLlavaMambaConfig.register_for_auto_class()
TransLlavaMambaModel.register_for_auto_class("AutoModel")
TransLlavaMambaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
# TransMamba-switch (Li et al.): a causal LM switching from attention to an SSM at per-layer TransPoints.
AutoConfig.register(TransMambaSwitchConfig.model_type, TransMambaSwitchConfig, exist_ok=True)
AutoModel.register(TransMambaSwitchConfig, TransMambaSwitchModel, exist_ok=True)
AutoModelForCausalLM.register(TransMambaSwitchConfig, TransMambaSwitchForCausalLM, exist_ok=True)
TransMambaSwitchConfig.register_for_auto_class()
TransMambaSwitchModel.register_for_auto_class("AutoModel")
TransMambaSwitchForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "PRESETS",
    "TransLlavaMambaConfig",
    "TransLlavaMambaForConditionalGeneration",
    "TransLlavaMambaModel",
    "TransLlavaMambaTextConfig",
    "TransMambaConfig",
    "TransMambaForImageClassification",
    "TransMambaImageClassifierOutput",
    "TransMambaModel",
    "TransMambaModelOutput",
    "TransMambaPreTrainedModel",
    "TransMambaSwitchConfig",
    "TransMambaSwitchForCausalLM",
    "TransMambaSwitchModel",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_state_step",
]
