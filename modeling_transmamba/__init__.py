"""TransMamba vision students as `transformers` models, registered with the Auto classes on import."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForVideoClassification,
)

from .configuration_transllava import TransLlavaMambaConfig, TransLlavaMambaTextConfig
from .configuration_transmamba import PRESETS, TransMambaConfig
from .configuration_transmamba_switch import TransMambaSwitchConfig
from .configuration_video_retrieval import TransVideoTextRetrievalConfig
from .configuration_videomamba import VIDEO_PRESETS, TransVideoMambaConfig
from .configuration_vmamba import VMAMBA_PRESETS, TransVMambaConfig
from .modeling_transllava import TransLlavaMambaForConditionalGeneration, TransLlavaMambaModel
from .modeling_transmamba import (
    TransMambaForImageClassification,
    TransMambaImageClassifierOutput,
    TransMambaModel,
    TransMambaModelOutput,
    TransMambaPreTrainedModel,
)
from .modeling_transmamba_switch import TransMambaSwitchForCausalLM, TransMambaSwitchModel
from .modeling_video_retrieval import TransMambaForVideoTextRetrieval, VideoTextRetrievalOutput
from .modeling_videomamba import TransMambaForVideoClassification, TransVideoMambaModel
from .modeling_vmamba import (
    TransVMambaBackbone,
    TransVMambaForImageClassification,
    TransVMambaImageClassifierOutput,
    TransVMambaModel,
    TransVMambaModelOutput,
    TransVMambaPreTrainedModel,
)
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
# TransVideoMamba (video students) and its text-video retrieval model, registered the same way.
AutoConfig.register(TransVideoMambaConfig.model_type, TransVideoMambaConfig, exist_ok=True)
AutoModel.register(TransVideoMambaConfig, TransVideoMambaModel, exist_ok=True)
AutoModelForVideoClassification.register(TransVideoMambaConfig, TransMambaForVideoClassification, exist_ok=True)
TransVideoMambaConfig.register_for_auto_class()
TransVideoMambaModel.register_for_auto_class("AutoModel")
TransMambaForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
AutoConfig.register(TransVideoTextRetrievalConfig.model_type, TransVideoTextRetrievalConfig, exist_ok=True)
AutoModel.register(TransVideoTextRetrievalConfig, TransMambaForVideoTextRetrieval, exist_ok=True)
TransVideoTextRetrievalConfig.register_for_auto_class()
TransMambaForVideoTextRetrieval.register_for_auto_class("AutoModel")

# TransMamba-switch (Li et al.): a causal LM switching from attention to an SSM at per-layer TransPoints.
AutoConfig.register(TransMambaSwitchConfig.model_type, TransMambaSwitchConfig, exist_ok=True)
AutoModel.register(TransMambaSwitchConfig, TransMambaSwitchModel, exist_ok=True)
AutoModelForCausalLM.register(TransMambaSwitchConfig, TransMambaSwitchForCausalLM, exist_ok=True)
TransMambaSwitchConfig.register_for_auto_class()
TransMambaSwitchModel.register_for_auto_class("AutoModel")
TransMambaSwitchForCausalLM.register_for_auto_class("AutoModelForCausalLM")

# TransVMamba (hierarchical, SS2D cross scan), also an AutoBackbone.
AutoConfig.register(TransVMambaConfig.model_type, TransVMambaConfig, exist_ok=True)
AutoModel.register(TransVMambaConfig, TransVMambaModel, exist_ok=True)
AutoModelForImageClassification.register(TransVMambaConfig, TransVMambaForImageClassification, exist_ok=True)
AutoBackbone.register(TransVMambaConfig, TransVMambaBackbone, exist_ok=True)
TransVMambaConfig.register_for_auto_class()
TransVMambaModel.register_for_auto_class("AutoModel")
TransVMambaForImageClassification.register_for_auto_class("AutoModelForImageClassification")
TransVMambaBackbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "PRESETS",
    "VIDEO_PRESETS",
    "TransLlavaMambaConfig",
    "TransLlavaMambaForConditionalGeneration",
    "TransLlavaMambaModel",
    "TransLlavaMambaTextConfig",
    "TransMambaConfig",
    "TransMambaForVideoClassification",
    "TransMambaForVideoTextRetrieval",
    "TransMambaForImageClassification",
    "TransMambaImageClassifierOutput",
    "TransMambaModel",
    "TransMambaModelOutput",
    "TransMambaPreTrainedModel",
    "TransVideoMambaConfig",
    "TransVideoMambaModel",
    "TransVideoTextRetrievalConfig",
    "VideoTextRetrievalOutput",
    "TransMambaSwitchConfig",
    "TransMambaSwitchForCausalLM",
    "TransMambaSwitchModel",
    "TransVMambaBackbone",
    "TransVMambaConfig",
    "TransVMambaForImageClassification",
    "TransVMambaImageClassifierOutput",
    "TransVMambaModel",
    "TransVMambaModelOutput",
    "TransVMambaPreTrainedModel",
    "VMAMBA_PRESETS",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_state_step",
]
