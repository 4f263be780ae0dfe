"""transmamba: TransMamba students as Hugging Face models, with subcloning and WSAB distillation.

The model classes load on first use (PEP 562), so `transmamba <command> --help` and argument errors do not pay
for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["PRESETS", "TransMambaConfig", "TransMambaForImageClassification", "TransMambaModel", "__version__"]

if TYPE_CHECKING:
    from .modeling_transmamba import PRESETS, TransMambaConfig, TransMambaForImageClassification, TransMambaModel


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".modeling_transmamba", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
