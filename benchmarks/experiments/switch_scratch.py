"""Experiment (a) of issue 16, in small: from scratch, equal steps and tokens, on the CPython stdlib corpus.

Variants (same TransMambaSwitchForCausalLM class, same weights count; only the TransPoints differ):
``transformer`` (P = block size: attention everywhere, i.e. a LLaMA), ``ssm`` (P = 0: the scalar-decay SSM
everywhere), ``switch-fixed`` (P = block/2 in every layer) and ``switch-cycle`` (P cycles over
[0, block/4, block/2, block] across layers, the paper's cyclic schedule scaled to the block).
Byte-level tokenizer, AdamW, cosine schedule, seed fixed per run. Every variant trains ``--steps`` steps on the
same batches and is evaluated on the same validation blocks every ``--eval-every`` steps.

Resumable: each (variant, seed) writes ``switch_scratch/<variant>-s<seed>.json`` as it goes and a checkpoint
every eval; a rerun skips finished runs and continues unfinished ones. ``--plot`` writes the PNG and table.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/experiments/switch_scratch.py --steps 300
    # the 10.7M-parameter run (hidden 384, 6 layers):
    OMP_NUM_THREADS=1 python benchmarks/experiments/switch_scratch.py --hidden 384 --layers 6 --steps 500 \\
        --lr 1e-3 --seeds 0 1 2 --out benchmarks/experiments/switch_scratch_10m
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM

from transmamba.text_data import LICENSE, SOURCE, byte_tokenizer, pack, stdlib_corpus

OUT = Path(__file__).with_name("switch_scratch")  # the default --out
VARIANTS = ("transformer", "ssm", "switch-fixed", "switch-cycle")


def transpoints(variant: str, block: int, layers: int):
    if variant == "transformer":
        return block
    if variant == "ssm":
        return 0
    if variant == "switch-fixed":
        return block // 2
    return [[0, block // 4, block // 2, block][i % 4] for i in range(layers)]


def model_for(variant: str, args) -> TransMambaSwitchForCausalLM:
    config = TransMambaSwitchConfig(
        vocab_size=257,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        transpoints=transpoints(variant, args.block, args.layers),
        tie_word_embeddings=True,
        eos_token_id=256,
        pad_token_id=256,
        bos_token_id=None,
    )
    return TransMambaSwitchForCausalLM(config)


@torch.no_grad()
def evaluate(model, blocks: torch.Tensor, batch: int) -> float:
    model.eval()
    losses = [model(input_ids=b, labels=b, use_cache=False).loss.item() for b in blocks.split(batch)]
    model.train()
    return sum(losses) / len(losses)


def run(variant: str, seed: int, train: torch.Tensor, valid: torch.Tensor, args) -> None:
    path, ckpt = args.out / f"{variant}-s{seed}.json", args.out / f"{variant}-s{seed}.pt"
    record = json.loads(path.read_text()) if path.exists() else None
    if record and record.get("done"):
        return
    torch.manual_seed(seed)
    model = model_for(variant, args).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    step = 0
    if record and ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    else:
        record = {
            "variant": variant,
            "seed": seed,
            "transpoints": model.config.layer_transpoints,
            "parameters": model.num_parameters(),
            "curve": [],
            "train_seconds": 0.0,
        }
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234))
    while step < args.steps:
        start = time.perf_counter()
        for _ in range(args.eval_every):
            index = order[(step * args.batch + torch.arange(args.batch)) % len(train)]
            lr = args.lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = model(input_ids=train[index], labels=train[index], use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        record["train_seconds"] += time.perf_counter() - start
        record["curve"].append(
            {"step": step, "train_loss": loss.item(), "val_loss": evaluate(model, valid, args.batch)}
        )
        record["done"] = step >= args.steps
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, ckpt)
        path.write_text(json.dumps(record, indent=1))
        print(variant, seed, record["curve"][-1], f"{record['train_seconds']:.0f}s", flush=True)
    ckpt.unlink(missing_ok=True)


def time_steps(args, train: torch.Tensor) -> None:
    """Training-step time of every variant, interleaved round by round (fair on a machine whose load drifts)."""
    models = {v: model_for(v, args).train() for v in args.variants}
    batch = train[: args.batch]
    times: dict[str, list[float]] = {v: [] for v in models}
    for _ in range(args.time_steps + 1):  # the first round warms up
        for variant, model in models.items():
            start = time.perf_counter()
            model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
            times[variant].append(time.perf_counter() - start)
    median = {v: sorted(t[1:])[len(t[1:]) // 2] for v, t in times.items()}
    base = median.get("transformer")
    result = {v: {"median_s": m, "vs_transformer": m / base if base else None} for v, m in median.items()}
    (args.out / "step_time.json").write_text(json.dumps({"rounds": args.time_steps, "steps": result}, indent=1))
    print(result, flush=True)


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*-s[0-9]*.json"))]
    meta = json.loads((out / "meta.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = [
        "| variant | seed | TransPoints | params | steps | val loss | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        steps = [c["step"] for c in r["curve"]]
        color = f"C{VARIANTS.index(r['variant'])}"  # one colour per variant, one line style per seed
        style = ("-", "--", ":", "-.")[r["seed"] % 4]
        ax.plot(steps, [c["val_loss"] for c in r["curve"]], color=color, linestyle=style,
                label=f"{r['variant']} (s{r['seed']})")  # fmt: skip
        last = r["curve"][-1]
        tp = r["transpoints"] if len(set(r["transpoints"])) > 1 else r["transpoints"][0]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {tp} | {r['parameters']:,} | {last['step']}"
            f"{'' if r.get('done') else ' (unfinished)'} | {last['val_loss']:.4f} | {r['train_seconds']:.0f} |"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats / byte)")
    ax.set_title(f"From scratch, {meta['tokens_per_step']} tokens/step, block {meta['block']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    timing = out / "step_time.json"
    if timing.exists():
        steps = json.loads(timing.read_text())["steps"]
        lines += [
            "",
            "Training step (fwd + bwd, one batch), median of interleaved rounds, relative to the transformer: "
            + ", ".join(f"{v} {t['vs_transformer']:.2f}" for v, t in steps.items()),
        ]
    header = f"Date {meta['date']}, {meta['machine']}. Data: {meta['data']}. Tokenizer: byte-level (257).\n"
    header += "Train time: wall seconds while the shared machine's load drifted; compare the step-time ratios.\n\n"
    out.with_suffix(".md").write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--eval-blocks", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=0, help="only time N interleaved training steps")
    parser.add_argument("--plot", action="store_true", help="only redraw the PNG and table from the JSON files")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder; its .png/.md sit beside it")
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    if args.plot:
        return plot(args.out)
    corpus, tokenizer = stdlib_corpus(), byte_tokenizer()
    need = args.steps * args.batch
    train = torch.tensor(pack(corpus["train"], tokenizer, args.block, max_blocks=need)["input_ids"])
    valid = torch.tensor(pack(corpus["validation"], tokenizer, args.block, max_blocks=args.eval_blocks)["input_ids"])
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{describe_machine()}, shared; {torch.get_num_threads()} thread(s)",
        "data": f"{SOURCE} ({LICENSE}), {len(train)} train blocks, {len(valid)} validation blocks",
        "block": args.block,
        "tokens_per_step": args.batch * args.block,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    if args.time_steps:
        return time_steps(args, train)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    for seed in args.seeds:
        for variant in args.variants:
            run(variant, seed, train, valid, args)
            plot(args.out)


if __name__ == "__main__":
    main()
