"""Teacher -> student tensors, and a report of where every student tensor came from.

Choices (documented here because the paper leaves them open):
- The mixer's ``out_proj`` (Linear(E, C), E = expand*C) takes the teacher's attention output projection: rows
  at the residual index set; its Dt input columns go into the first min(E, Dt) input columns (the teacher's
  first columns when E < Dt); extra columns (E > Dt) are zero, so the unmatched mixer channels start silent.
- DINOv2's layer scales are folded in: lambda1 into ``out_proj`` rows and bias, lambda2 into ``fc2``.
- DeiT's distillation token and its position are dropped; the head is DeiT's class-token head (``cls_classifier``).
- DINOv2's classifier reads [class token, mean of patches]: a class-token student gets the first half of its
  weights, a mean-pooling student the second half.
- Position embeddings: ViT layout [cls, grid...] when the student has a class token, else grid only; the grid is
  resized (bicubic) when the student's differs from the teacher's.
- Everything else of the mixer (in_proj, conv, SSM parameters) keeps the standard Mamba init, unless
  ``mixer_init="attention"``: then ``in_proj``'s x rows, the B/C rows of ``x_proj`` and the conv come from the
  same teacher layer's attention as ``attention_init.py`` documents (x <- W_V, B <- W_K, C <- W_Q).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modeling_transmamba import TransMambaConfig, TransMambaForImageClassification
from .attention_init import OPEN_GATE_BIAS, PINV_RTOL, attention_informed
from .importance import Selection
from .teachers import Teacher

_SSM_PARAMETERS = ("x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D", "direction_B", "conv.")


class _Writer:
    """Copies tensors into the student and records their provenance."""

    def __init__(self, student: TransMambaForImageClassification, teacher: Teacher):
        self.params = dict(student.state_dict(keep_vars=True))
        self.names = teacher.parameter_names()
        self.entries: dict[str, dict] = {}

    @torch.no_grad()
    def put(self, name: str, value: torch.Tensor, sources: list, sliced: bool, index_source=None, note=None) -> None:
        target = self.params[name]
        if tuple(value.shape) != tuple(target.shape):
            raise RuntimeError(f"{name}: mapped shape {tuple(value.shape)} != student {tuple(target.shape)}")
        target.copy_(value)
        entry = {"status": "sliced" if sliced else "copied", "source": [self.names[id(s)] for s in sources]}
        if sliced and index_source:
            entry["index_source"] = index_source
        if note:
            entry["note"] = note
        self.entries[name] = entry

    def report(self) -> dict[str, dict]:
        out = {}
        for name in self.params:
            if name in self.entries:
                out[name] = self.entries[name]
            elif any(part in name for part in _SSM_PARAMETERS) or ".mixer.in_proj." in name:
                out[name] = {"status": "initialised", "note": "standard Mamba init"}
            else:
                out[name] = {"status": "initialised", "note": "default init (no teacher counterpart)"}
        return out


def _positions(teacher: Teacher, rows: torch.Tensor, config: TransMambaConfig) -> tuple[torch.Tensor, str | None]:
    table = teacher.position_embeddings.detach()[..., rows]
    cls, grid = table[:, :1], table[:, teacher.num_prefix_tokens :]
    old, new = teacher.position_grid, config.grid_size
    note = None
    if old != new:
        image = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        image = F.interpolate(image, size=(new, new), mode="bicubic", align_corners=False)
        grid = image.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(table.dtype)
        note = f"patch grid resized {old}x{old} -> {new}x{new} (bicubic)"
    return (torch.cat([cls, grid], dim=1) if config.use_cls_token else grid), note


class _Plan:
    """What one subclone keeps: residual rows ``r`` (all layers), per-layer MLP neurons, and how to describe them."""

    def __init__(self, teacher: Teacher, config: TransMambaConfig, selection: Selection):
        self.teacher, self.config, self.selection = teacher, config, selection
        self.r = selection.residual
        self.narrow = len(self.r) < teacher.hidden_size
        self.source = f"residual channels ({selection.method})"

    def mlp(self, layer: int) -> tuple[torch.Tensor, bool, str]:
        if self.selection.mlp is None:
            return torch.arange(self.teacher.blocks[layer].fc1.out_features), False, ""
        return self.selection.mlp[layer], True, f"MLP neurons of layer {layer} ({self.selection.method})"

    def scale(self, lam: torch.Tensor | None) -> torch.Tensor:
        return lam[self.r] if lam is not None else torch.ones(len(self.r))


def _embeddings(w: _Writer, plan: _Plan) -> None:
    teacher, config, r, narrow, src = plan.teacher, plan.config, plan.r, plan.narrow, plan.source
    proj = teacher.patch_projection
    w.put("transmamba.embeddings.patch_embeddings.projection.weight", proj.weight[r], [proj.weight], narrow, src)
    w.put("transmamba.embeddings.patch_embeddings.projection.bias", proj.bias[r], [proj.bias], narrow, src)
    if config.use_cls_token:
        w.put("transmamba.embeddings.cls_token", teacher.cls_token[..., r], [teacher.cls_token], narrow, src)
    positions, resized = _positions(teacher, r, config)
    if not config.use_cls_token:
        dropped = "teacher's class/distillation-token positions dropped (student has no class token)"
    else:
        dropped = "teacher's distillation-token position dropped" if teacher.num_prefix_tokens > 1 else None
    tokens = "class + patch grid" if config.use_cls_token else "patch grid"
    w.put(
        "transmamba.embeddings.position_embeddings",
        positions,
        [teacher.position_embeddings],
        narrow or dropped is not None,
        f"{src}; tokens: {tokens}",
        "; ".join(x for x in (dropped, resized) if x) or None,
    )


def _mixer_out(w: _Writer, plan: _Plan, i: int, prefix: str | None = None) -> None:
    """Attention output projection -> out_proj: rows at r (times layer scale), input columns as documented above.

    ``prefix``: the student's out_proj key (default: layer ``i`` of an isotropic student)."""
    block, inner, r, narrow = plan.teacher.blocks[i], plan.config.intermediate_size, plan.r, plan.narrow
    o, lam = block.attn_out, block.scale_attn
    extra = [lam] if lam is not None else []
    cols = min(inner, o.in_features)
    weight = o.weight.new_zeros(len(r), inner)
    weight[:, :cols] = o.weight[r][:, :cols] * plan.scale(lam)[:, None]
    note = [f"input columns: teacher's first {cols} of {o.in_features} -> mixer channels 0..{cols - 1}"]
    if inner > cols:
        note.append(f"mixer channels {cols}..{inner - 1} zero")
    if lam is not None:
        note.append("layer scale lambda1 folded into rows")
    source = f"{plan.source}; input columns" if narrow else "input columns"
    prefix = prefix or f"transmamba.layers.{i}.mixer.out_proj"
    w.put(f"{prefix}.weight", weight, [o.weight] + extra, narrow or inner != o.in_features, source, "; ".join(note))
    if plan.config.out_proj_bias:
        note = "layer scale lambda1 folded in" if lam is not None else None
        w.put(f"{prefix}.bias", o.bias[r] * plan.scale(lam), [o.bias] + extra, narrow, plan.source, note)


def _mixer_attention(w: _Writer, plan: _Plan, i: int) -> None:
    """``mixer_init="attention"``: x rows of in_proj <- W_V (+ bias), B/C rows of x_proj <- W_K/W_Q through
    pinv(W_V), per parameter set (head k for set k), identity conv, open gate, D = 1/tokens
    (``attention_init.py``)."""
    block, config, r = plan.teacher.blocks[i], plan.config, plan.r
    prefix = f"transmamba.layers.{i}.mixer"
    heads = plan.teacher.config.num_attention_heads
    inner, state, rank = config.intermediate_size, config.state_size, config.time_step_rank
    in_w, in_b = w.params[f"{prefix}.in_proj.weight"].detach().clone(), w.params.get(f"{prefix}.in_proj.bias")
    x_proj = w.params[f"{prefix}.x_proj_weight"].detach().clone()
    heads_used = []
    for k in range(x_proj.shape[0]):
        mapped = attention_informed(block.q.weight[:, r], block.k.weight[:, r], block.v.weight[:, r], block.v.bias,
                                    heads, inner, state, k)  # fmt: skip
        in_w[: mapped.width] = mapped.x_weight
        x_proj[k, rank : rank + state] = mapped.B
        x_proj[k, rank + state :] = mapped.C
        heads_used.append(mapped.head)
    width = mapped.width
    gate = "standard init (no bias to open the gate)"
    if in_b is not None:  # open the gate: z rows zero, z bias with silu = 1
        gate = "zero (open gate: silu(bias) = 1)"
        in_w[inner:] = 0.0
        bias = in_b.detach().clone()
        bias[inner:] = OPEN_GATE_BIAS
        sources, x_half = [], "x half standard (the teacher has no b_V)"
        if block.v.bias is not None:
            bias[:width] = block.v.bias[:width]
            sources, x_half = [block.v.bias], "x half 0..w-1 <- b_V; rest of x standard"
        note = f"{x_half}; z half {OPEN_GATE_BIAS:.4f} (silu = 1)"
        w.put(f"{prefix}.in_proj.bias", bias, sources, True, plan.source, note)
    note = f"x rows 0..{width - 1} <- W_V rows 0..{width - 1}; x rows {width}..: standard init; z rows: {gate}"
    w.put(f"{prefix}.in_proj.weight", in_w, [block.v.weight], True, plan.source, note)
    tokens = config.grid_size**2 + int(config.use_cls_token)
    w.params[f"{prefix}.D"].data.fill_(1.0 / tokens)
    w.entries[f"{prefix}.D"] = {"status": "initialised", "note": f"1/{tokens}: a uniform attention's self weight"}
    sets = ", ".join(f"set {k}: head {h}" for k, h in enumerate(heads_used))
    note = (f"B rows <- W_K[head, :{state}] pinv(W_V[:{width}]), C rows <- W_Q[head, :{state}] pinv(W_V[:{width}]) "
            f"on mixer channels 0..{width - 1}, zero beyond ({sets}); pinv keeps singular values >= {PINV_RTOL:.0%} of "
            "the largest; dt rows standard init")  # fmt: skip
    w.put(f"{prefix}.x_proj_weight", x_proj, [block.k.weight, block.q.weight, block.v.weight], True, plan.source, note)
    conv = w.params[f"{prefix}.conv.weight"]
    identity = torch.zeros_like(conv)
    if config.conv_dim == 2:
        identity[..., conv.shape[-2] // 2, conv.shape[-1] // 2] = 1.0  # centre tap: each token keeps its own x
    else:
        identity[..., -1] = 1.0  # causal conv: the last tap is the current token
    conv.data.copy_(identity)
    w.entries[f"{prefix}.conv.weight"] = {"status": "initialised", "note": "identity (attention-informed init)"}
    if f"{prefix}.conv.bias" in w.params:
        w.params[f"{prefix}.conv.bias"].data.zero_()
        w.entries[f"{prefix}.conv.bias"] = {"status": "initialised", "note": "zero (attention-informed init)"}


def _mlp(w: _Writer, plan: _Plan, i: int, prefix: str | None = None) -> None:
    block, r, narrow = plan.teacher.blocks[i], plan.r, plan.narrow
    m, mlp_narrow, mlp_source = plan.mlp(i)
    both = "; ".join(x for x in (plan.source if narrow else "", mlp_source) if x)
    fc1, fc2, lam = block.fc1, block.fc2, block.scale_mlp
    extra, note = ([lam], "layer scale lambda2 folded in") if lam is not None else ([], None)
    prefix = prefix or f"transmamba.layers.{i}.mlp"
    w.put(f"{prefix}.fc1.weight", fc1.weight[m][:, r], [fc1.weight], narrow or mlp_narrow, both)
    w.put(f"{prefix}.fc1.bias", fc1.bias[m], [fc1.bias], mlp_narrow, mlp_source)
    fc2_weight = fc2.weight[r][:, m] * plan.scale(lam)[:, None]
    w.put(f"{prefix}.fc2.weight", fc2_weight, [fc2.weight] + extra, narrow or mlp_narrow, both, note)
    w.put(f"{prefix}.fc2.bias", fc2.bias[r] * plan.scale(lam), [fc2.bias] + extra, narrow, plan.source, note)


def _norm(w: _Writer, plan: _Plan, name: str, norm: torch.nn.LayerNorm) -> None:
    for kind in ("weight", "bias"):
        tensor = getattr(norm, kind)
        w.put(f"{name}.{kind}", tensor[plan.r], [tensor], plan.narrow, plan.source)


def _head(w: _Writer, plan: _Plan) -> None:
    """Copied when the teacher has a head with the student's label count; otherwise the fresh head stays."""
    head, teacher, config = plan.teacher.head, plan.teacher, plan.config
    if head is None or head.out_features != config.num_labels:
        return
    weight, note = head.weight, None
    if teacher.head_pooling == "cls+mean":
        start = 0 if config.pooling == "cls" else teacher.hidden_size
        weight = weight[:, start : start + teacher.hidden_size]
        note = f"teacher head reads [cls, mean patches]; took the {config.pooling} half"
    w.put("classifier.weight", weight[:, plan.r], [head.weight], plan.narrow or note is not None, plan.source, note)
    w.put("classifier.bias", head.bias, [head.bias], False)


@torch.no_grad()
def subclone(teacher: Teacher, config: TransMambaConfig, selection: Selection, seed: int = 0,
             mixer_init: str = "standard"):  # fmt: skip
    """Build the student (standard init, seeded) and overwrite every tensor that has a teacher counterpart.

    ``mixer_init="attention"`` also maps each layer's attention into its mixer (``_mixer_attention``).

    Returns (student, report): report maps every student state-dict key to copied / sliced / initialised.
    """
    if mixer_init not in ("standard", "attention"):
        raise ValueError(f"mixer_init must be 'standard' or 'attention', got {mixer_init!r}.")
    torch.manual_seed(seed)
    student = TransMambaForImageClassification(config).eval()
    w, plan = _Writer(student, teacher), _Plan(teacher, config, selection)
    _embeddings(w, plan)
    blocks_and_head(w, plan, teacher, config, mixer_init)
    return student, w.report()


def blocks_and_head(w: _Writer, plan: _Plan, teacher: Teacher, config, mixer_init: str = "standard") -> None:
    """What every isotropic student (image, video) takes from its teacher past the embeddings: each block's
    norms, mixer output projection (and, with ``mixer_init="attention"``, its attention) and MLP, the final norm
    and the head."""
    for i in range(config.num_hidden_layers):
        block = teacher.blocks[i]
        _norm(w, plan, f"transmamba.layers.{i}.layernorm_before", block.norm_before)
        _mixer_out(w, plan, i)
        if mixer_init == "attention":
            _mixer_attention(w, plan, i)
        if config.mlp_ratio > 0:
            _norm(w, plan, f"transmamba.layers.{i}.layernorm_after", block.norm_after)
            _mlp(w, plan, i)
    _norm(w, plan, "transmamba.layernorm", teacher.final_norm)
    _head(w, plan)


def summarise(report: dict[str, dict], student: TransMambaForImageClassification) -> dict:
    """Counts of tensors and parameters per status."""
    sizes = {name: t.numel() for name, t in student.state_dict().items()}
    summary = {}
    for name, entry in report.items():
        slot = summary.setdefault(entry["status"], {"tensors": 0, "parameters": 0})
        slot["tensors"] += 1
        slot["parameters"] += sizes[name]
    return summary
