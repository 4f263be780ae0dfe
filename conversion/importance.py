"""Which teacher channels a narrower student keeps.

One index set for the residual stream, shared by every layer (the residual adds layers together, so their
channels must line up), and one index set per layer for the MLP's hidden neurons. Three scores:

- ``magnitude``: L2 norm of every teacher weight that reads or writes the channel (no data needed);
- ``activation``: mean |hidden state| per channel over a few batches (residual: embeddings and every kept layer's
  output; MLP: |act(fc1(x))| per neuron);
- ``finetune-delta`` (the paper): fine-tune the teacher briefly with AdamW on the data, through a temporary linear
  head on its class token; keep the channels whose weights moved *least* (L2 of the change). The teacher's weights
  are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.activations import ACT2FN

from .args import IMPORTANCE_METHODS as METHODS
from .args import NEEDS_DATA
from .teachers import Teacher, TeacherBlock

Batch = dict[str, torch.Tensor]


@dataclass
class Selection:
    """Kept teacher indices: ``residual`` (student width), ``mlp`` one per kept layer (None when all are kept)."""

    method: str
    residual: torch.Tensor
    mlp: list[torch.Tensor] | None
    details: dict = field(default_factory=dict)


def residual_tensors(teacher: Teacher, depth: int) -> list[tuple[torch.Tensor, int]]:
    """(tensor, axis indexed by residual channel) for every teacher weight that touches the residual stream."""
    pairs = [(teacher.patch_projection.weight, 0), (teacher.patch_projection.bias, 0)]
    pairs += [(teacher.cls_token, 2), (teacher.position_embeddings, 2)]
    for block in teacher.blocks[:depth]:
        pairs += [(block.norm_before.weight, 0), (block.norm_before.bias, 0), (block.norm_after.weight, 0)]
        pairs += [(block.norm_after.bias, 0), (block.q.weight, 1), (block.k.weight, 1), (block.v.weight, 1)]
        pairs += [(block.attn_out.weight, 0), (block.attn_out.bias, 0), (block.fc1.weight, 1)]
        pairs += [(block.fc2.weight, 0), (block.fc2.bias, 0)]
        pairs += [(scale, 0) for scale in (block.scale_attn, block.scale_mlp) if scale is not None]
    pairs += [(teacher.final_norm.weight, 0), (teacher.final_norm.bias, 0)]
    if teacher.head is not None and teacher.head_pooling == "cls":
        pairs.append((teacher.head.weight, 1))
    return [(tensor, axis) for tensor, axis in pairs if tensor is not None]


def mlp_tensors(block: TeacherBlock) -> list[tuple[torch.Tensor, int]]:
    """(tensor, axis indexed by MLP neuron) for one block."""
    return [(block.fc1.weight, 0), (block.fc1.bias, 0), (block.fc2.weight, 1)]


def _energy(pairs: list[tuple[torch.Tensor, int]], transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sqrt of the summed squares of each channel's entries over all tensors."""
    total = None
    for tensor, axis in pairs:
        values = transform(tensor).detach().double().movedim(axis, 0)
        squares = values.reshape(values.shape[0], -1).pow(2).sum(1)
        total = squares if total is None else total + squares
    return total.sqrt()


def top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` highest-scoring indices, ties to the lower index, returned in ascending (teacher) order."""
    order = torch.sort(-scores, stable=True).indices[:count]
    return order.sort().values


def _as_is(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def magnitude_scores(teacher: Teacher, depth: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    residual = _energy(residual_tensors(teacher, depth), _as_is)
    return residual, [_energy(mlp_tensors(b), _as_is) for b in teacher.blocks[:depth]]


@torch.no_grad()
def activation_scores(
    teacher: Teacher, batches: Sequence[Batch], depth: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean |activation| per residual channel and per MLP neuron of each kept layer."""
    act = ACT2FN[teacher.config.hidden_act]
    mlp_sums = [torch.zeros(b.fc1.out_features, dtype=torch.float64) for b in teacher.blocks[:depth]]
    residual = torch.zeros(teacher.hidden_size, dtype=torch.float64)

    def hook(index: int):
        def record(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            mlp_sums[index] += act(output).abs().double().mean(dim=(0, 1))

        return record

    handles = [b.fc1.register_forward_hook(hook(i)) for i, b in enumerate(teacher.blocks[:depth])]
    try:
        for batch in tqdm(batches, desc="activation importance", unit="batch"):
            hidden = teacher.base_forward(batch["pixel_values"], output_hidden_states=True).hidden_states
            residual += torch.stack([h.abs().double().mean(dim=(0, 1)) for h in hidden[: depth + 1]]).mean(0)
    finally:
        for handle in handles:
            handle.remove()
    return residual / len(batches), [s / len(batches) for s in mlp_sums]


def finetune(
    teacher: Teacher, batches: Sequence[Batch], lr: float, seed: int
) -> tuple[dict[int, torch.Tensor], list[float]]:
    """Fine-tune the teacher one step per batch (AdamW, temporary class-token head); return the change of every
    parameter (keyed by id) and the losses, and put the original weights back."""
    model = teacher.model
    num_labels = int(max(int(b["labels"].max()) for b in batches)) + 1
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(teacher.hidden_size, num_labels)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=generator)
        head.bias.zero_()
    params = [p for p in model.parameters() if p.requires_grad]
    before = {id(p): p.detach().clone() for p in params}
    optimizer = torch.optim.AdamW(params + list(head.parameters()), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    try:
        for batch in tqdm(batches, desc="fine-tuning teacher", unit="step"):
            tokens = teacher.base_forward(batch["pixel_values"]).last_hidden_state[:, 0]
            loss = F.cross_entropy(head(tokens), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        delta = {id(p): (p.detach() - before[id(p)]) for p in params}
    finally:
        model.eval()
        with torch.no_grad():
            for p in params:
                p.copy_(before[id(p)])
                p.grad = None
    return delta, losses


def finetune_delta_movement(
    teacher: Teacher, batches: Sequence[Batch], depth: int, lr: float, seed: int
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """How far each residual channel's / MLP neuron's weights moved while fine-tuning (L2)."""
    delta, losses = finetune(teacher, batches, lr, seed)

    def moved(tensor: torch.Tensor) -> torch.Tensor:
        return delta.get(id(tensor), torch.zeros_like(tensor))

    residual = _energy(residual_tensors(teacher, depth), moved)
    return residual, [_energy(mlp_tensors(b), moved) for b in teacher.blocks[:depth]], losses


def select_indices(
    teacher: Teacher,
    method: str,
    width: int,
    mlp_width: int,
    depth: int,
    batches: Sequence[Batch] | None = None,
    lr: float = 1e-4,
    seed: int = 0,
) -> Selection:
    """Indices the student keeps; identity (no scoring) when it is as wide as the teacher."""
    if method not in METHODS:
        raise ValueError(f"Unknown importance method {method!r}; choose one of {', '.join(METHODS)}.")
    narrow_mlp = 0 < mlp_width < teacher.mlp_hidden_size
    if width == teacher.hidden_size and not narrow_mlp:
        return Selection("identity", torch.arange(width), None)
    if method in NEEDS_DATA and not batches:
        raise ValueError(f"--importance {method} needs images: pass --data (e.g. --data digits).")
    details = {}
    if method == "magnitude":
        residual, mlp = magnitude_scores(teacher, depth)
    elif method == "activation":
        residual, mlp = activation_scores(teacher, batches, depth)
        details["batches"] = len(batches)
    else:
        moved, mlp_moved, losses = finetune_delta_movement(teacher, batches, depth, lr, seed)
        residual, mlp = -moved, [-m for m in mlp_moved]  # least moved = most important
        details.update(steps=len(losses), lr=lr, losses=[round(x, 5) for x in losses])
    return Selection(
        method,
        top_indices(residual, width),
        [top_indices(scores, mlp_width) for scores in mlp] if narrow_mlp else None,
        details,
    )
