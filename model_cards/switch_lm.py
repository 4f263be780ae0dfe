"""Model card of a TransMamba-switch LM: converted from a Transformer LM (stage 1) or trained (train-lm)."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from .stage1 import GEMMA_NOTICE

PAPER = "https://arxiv.org/abs/2503.24067"
CITATION = """```bibtex
@article{li2025transmamba,
  title={TransMamba: Flexibly Switching between Transformer and Mamba},
  author={Li, Yixing and Xie, Ruobing and Yang, Zhen and others},
  journal={arXiv preprint arXiv:2503.24067},
  year={2025}
}
```"""

BODY = """
# {title}

A **TransMamba-switch** causal LM ([Li et al., 2025]({paper})): each layer shares one set of projections between
causal attention (Q, K, V) and a Mamba-2-style SSM (C, B, x), runs attention on the tokens before its TransPoint
and the SSM from it on; the memory converter hands the attention prefix to the SSM state without loss.

{status}

## How to load

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{repo}")
```

The modeling code ships in this repository (pure PyTorch; Mamba-2's CUDA kernel is used when installed).

## How it was made

| | |
|---|---|
| Source | {source} |
| Layers / width / heads (KV heads) / head dim | {layers} / {width} / {heads} ({kv_heads}) / {head_dim} |
| TransPoints per layer | {transpoints} |
| Parameters | {params:,} |
| SSM init | {ssm_init} |
{extra}
## Citation

{citation}
{notice}"""


def switch_lm_card(
    *,
    config,
    num_parameters: int,
    source: str,
    status: str,
    base_model: str | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    rows: dict[str, str] | None = None,
    ssm_init: str = "Mamba-2's (see the report)",
    gemma: bool = False,
) -> ModelCard:
    """``status`` says what the model is (converted and untrained, or trained and how); ``rows`` add facts."""
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license or ("gemma" if gemma else None),
        tags=["transmamba", "transmamba-switch", "mamba", "hybrid", "text-generation"],
    )
    body = BODY.format(
        title=repo_id.split("/")[-1] if repo_id else f"TransMamba-switch from {base_model or source}",
        paper=PAPER,
        status=status,
        repo=repo_id or "path/to/this/folder",
        source=source,
        layers=config.num_hidden_layers,
        width=config.hidden_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        transpoints=", ".join(map(str, config.layer_transpoints)),
        params=num_parameters,
        ssm_init=ssm_init,
        extra="".join(f"| {k} | {v} |\n" for k, v in (rows or {}).items()),
        citation=CITATION,
        notice=f"\n{GEMMA_NOTICE}(See `NOTICE`.)\n" if gemma else "",
    )
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
