"""transmamba: TransMamba students as Hugging Face models, with subcloning and WSAB distillation."""

from .modeling_transmamba import (
    PRESETS,
    TransMambaConfig,
    TransMambaForImageClassification,
    TransMambaModel,
)

__version__ = "0.1.0"
__all__ = ["PRESETS", "TransMambaConfig", "TransMambaForImageClassification", "TransMambaModel", "__version__"]
