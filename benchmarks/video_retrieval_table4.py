"""Table 4 analogue: text-video retrieval with a TransVideoMamba student vs VideoMamba from scratch vs the teacher.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/video_retrieval_table4.py --teacher DINOV2_FOLDER --seeds 0 1 2

Data: the offline moving-Fashion-MNIST clips (`transmamba.video_data`: real Fashion-MNIST items moving along 8
directions at 2 speeds for 8 frames on a 56 px canvas, captions from class + motion); held-out split = one clip
per caption (160); frames are resized to `--image-size` (42 px: a 3 x 3 grid of 14 px patches). Text tower:
all-MiniLM-L6-v2, frozen, for every row (captions padded to 16 tokens). Rows, each trained for the same steps,
batch and learning rate through `RetrievalTrainer` (the `train-retrieval` code path):
- TransVideoMamba: subcloned from the teacher (`convert_video`), InfoNCE + the teacher's video embedding (its
  mean over frames) as a distillation target (beta = 1, `--distill_target video`, the `train-retrieval` default).
- TransVideoMamba, per-frame targets: the same against the teacher's features frame by frame
  (`--distill_target frames`).
- Subclone only: the subcloned student, InfoNCE only (no teacher term).
- VideoMamba (scratch): the same architecture, fresh init, InfoNCE only.
- Teacher (CLIP4Clip meanP, frozen): the image teacher's frame-mean feature + a trained linear projection.
- Teacher, temporal: the same frozen per-frame features, concatenated in frame order, through a trained linear
  projection: a teacher that can see a motion's direction, which the frame mean cannot.
- TransVideoMamba, temporal teacher: the subclone distilled toward that teacher's video embedding (its own seed's
  teacher), the same cosine term through the calibration MLP.
- TransVideoMamba, similarity KD: the subclone, InfoNCE + KL between that teacher's and the student's in-batch match
  distributions (`SimilarityDistillation`).
Every (row, seed) result is written to ``--out-dir/table4.json`` as soon as it exists; a rerun skips it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, TrainingArguments
from transmamba.conversion.convert_video import VideoConvertArguments, convert_video
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba.modeling_video_retrieval import MAX_LOGIT_SCALE, symmetric_info_nce
from transmamba.trainers.retrieval import (
    RetrievalDistillation,
    RetrievalTrainer,
    RetrievalTrainingOutput,
    build_retrieval_model,
    retrieval_transform,
    teacher_frame_features,
    text_video_metrics,
)
from transmamba.trainers.retrieval_args import default_text_encoder
from transmamba.trainers.train_retrieval import load_video_student

from transmamba.video_data import load_moving_clips

PAPER = "MSR-VTT R@1: TransVideoMamba 41.6, VideoMamba 40.9, CLIP4Clip 42.1 (paper Table 4)"
ROWS = ("transvideomamba", "transvideomamba-frames", "transvideomamba-temporal", "transvideomamba-simkd",
        "subclone-only", "videomamba-scratch",
        "teacher-clip4clip", "teacher-temporal")  # fmt: skip
TEACHER_ROWS = {"teacher-clip4clip": "mean", "teacher-temporal": "concat"}  # how each teacher row pools the frames
# the distillation target per student row; the temporal teacher's video embedding stands in for frame features
TARGETS = {"transvideomamba": "video", "transvideomamba-frames": "frames", "transvideomamba-temporal": "video"}


class Clips(torch.utils.data.Dataset):
    """Preprocessed tensors, one dict per clip (the Trainer's collator stacks them)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def cached(path: Path, build):
    if path.is_file():
        return torch.load(path)
    value = build()
    torch.save(value, path)
    return value


def prepare(args, work: Path) -> dict:
    """Clips -> pixels/tokens (cached), teacher video embeddings (cached), the converted student folder."""
    student = work / "student"
    if not student.is_dir():
        convert_video(VideoConvertArguments(teacher=args.teacher, student=args.student, output=student,
                                            image_size=args.image_size))  # fmt: skip
    processor = AutoImageProcessor.from_pretrained(student)
    tokenizer = AutoTokenizer.from_pretrained(args.text_encoder)
    teacher = AutoModel.from_pretrained(args.teacher).eval()

    def build():
        clips = load_moving_clips("moving_fashion_mnist", num_train=args.num_train, num_frames=8, canvas=56, seed=0)
        out = {}
        for split in ("train", "test"):
            batch = retrieval_transform(processor, tokenizer, 8, "video", "caption", 16)(clips[split][:])
            with torch.no_grad():
                batch["teacher_frames"] = torch.cat([teacher_frame_features(teacher, p) for p in
                                                     batch["pixel_values"].split(64)])  # fmt: skip
            out[split] = batch
        return out

    return {"data": cached(work / "clips-teacher-frames.pt", build), "student": student, "tokenizer": tokenizer}


def training_args(args, out: Path, seed: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32, learning_rate=args.lr, warmup_steps=max(1, args.steps // 10),
        lr_scheduler_type="cosine", logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none",
        seed=seed, use_cpu=True, remove_unused_columns=False, label_names=[], dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip


def train_student(args, prep, row: str, seed: int, work: Path) -> dict:
    torch.manual_seed(seed)
    student = load_video_student(str(prep["student"]))
    scratch = row == "videomamba-scratch"
    model = build_retrieval_model(None if scratch else student, args.text_encoder, args.projection_dim,
                                  vision_config=student.config)  # fmt: skip
    beta = 1.0 if row in TARGETS else 0.0
    train = dict(prep["data"]["train"])
    if row == "transvideomamba-temporal":  # (clips, 1, dim): the "video" target's frame mean is the embedding itself
        train["teacher_frames"] = teacher_run(args, prep, seed, "concat", work)["train_embeddings"]["video"][:, None]
    if row == "transvideomamba-simkd":
        joint = teacher_run(args, prep, seed, "concat", work)["train_embeddings"]
        train.pop("teacher_frames")
        train.update(teacher_video=joint["video"], teacher_text=joint["text"])
        wrapper = SimilarityDistillation(model, joint["scale"])
    else:
        wrapper = RetrievalDistillation(model, train["teacher_frames"].shape[-1], beta, TARGETS.get(row, "video"))
    test = {k: v for k, v in prep["data"]["test"].items() if k != "teacher_frames"}
    trainer = RetrievalTrainer(model=wrapper, args=training_args(args, work / f"{row}-s{seed}", seed),
                               train_dataset=Clips(train), eval_dataset=Clips(test))  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    losses = [e["info_nce"] for e in trainer.state.log_history if "info_nce" in e]
    return {"metrics": metrics, "train_seconds": round(seconds, 1), "info_nce_log": losses,
            "video_parameters": model.video_model.num_parameters()}  # fmt: skip


def train_teacher_row(args, prep, seed: int, pooling: str = "mean") -> dict:
    """CLIP4Clip with the frozen image teacher: only the two projections and the logit scale train. ``pooling``:
    "mean" (meanP) averages the frame features; "concat" joins them in frame order, so the projection sees the
    order. Returns the metrics and, as a student's targets, the training clips' normalised video and caption
    embeddings with the learned logit scale."""
    torch.manual_seed(seed)
    text_model = AutoModel.from_pretrained(args.text_encoder).eval()

    def text_features(split):
        data = prep["data"][split]
        with torch.no_grad():
            tokens = text_model(input_ids=data["input_ids"], attention_mask=data["attention_mask"])[0]
        mask = data["attention_mask"][..., None].float()
        return (tokens * mask).sum(1) / mask.sum(1)

    train_text, test_text = text_features("train"), text_features("test")
    pool = (lambda f: f.mean(1)) if pooling == "mean" else (lambda f: f.flatten(1))
    video_train, video_test = (pool(prep["data"][split]["teacher_frames"]) for split in ("train", "test"))
    video_proj = nn.Linear(video_train.shape[-1], args.projection_dim, bias=False)
    text_proj = nn.Linear(train_text.shape[-1], args.projection_dim, bias=False)
    scale = nn.Parameter(torch.tensor(2.6592))
    params = [*video_proj.parameters(), *text_proj.parameters(), scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(video_train), generator=generator) for _ in range(args.steps)])
    for step in range(args.steps):
        index = order[step * args.batch_size : (step + 1) * args.batch_size]
        v = nn.functional.normalize(video_proj(video_train[index]), dim=-1)
        t = nn.functional.normalize(text_proj(train_text[index]), dim=-1)
        loss = symmetric_info_nce(scale.clamp(max=MAX_LOGIT_SCALE).exp() * t @ v.t())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        metrics = text_video_metrics(text_proj(test_text), video_proj(video_test))
        embeddings = {"video": nn.functional.normalize(video_proj(video_train), dim=-1),
                      "text": nn.functional.normalize(text_proj(train_text), dim=-1),
                      "scale": scale.clamp(max=MAX_LOGIT_SCALE).exp()}  # fmt: skip
    return {"metrics": {f"eval_{k}": v for k, v in metrics.items()}, "train_embeddings": embeddings}


def teacher_run(args, prep, seed: int, pooling: str, work: Path) -> dict:
    """`train_teacher_row`, trained once per pooling and seed (cached): its row and the students it teaches share
    one teacher."""
    return cached(work / f"teacher-{pooling}-s{seed}.pt", lambda: train_teacher_row(args, prep, seed, pooling))


class SimilarityDistillation(RetrievalDistillation):
    """InfoNCE + β · KL between the teacher's and the student's in-batch text->video and video->text match
    distributions (each at its own learned logit scale): the teacher says which other captions nearly match."""

    def __init__(self, model, teacher_scale: torch.Tensor, beta: float = 1.0):
        super().__init__(model)  # no calibration MLP: similarities need none
        self.beta, self.teacher_scale = beta, float(teacher_scale)

    def forward(self, pixel_values, input_ids, attention_mask=None, teacher_video=None, teacher_text=None):
        out = self.model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        logs, loss = {"info_nce": out.loss.detach()}, out.loss
        if self.training and teacher_video is not None:
            teacher = self.teacher_scale * teacher_text @ teacher_video.t()
            student = out.logits_per_text
            kd = sum(nn.functional.kl_div(nn.functional.log_softmax(s, -1), nn.functional.log_softmax(t, -1),
                                          log_target=True, reduction="batchmean")
                     for s, t in ((student, teacher), (student.t(), teacher.t()))) / 2  # fmt: skip
            loss = loss + self.beta * kd
            logs["distill_loss"] = kd.detach()
        return RetrievalTrainingOutput(loss=loss, text_embeds=out.text_embeds, video_embeds=out.video_embeds, logs=logs)


def write_tables(results: dict, args, out_dir: Path) -> None:
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{describe_machine()}, shared",
            "budget": {"steps": args.steps, "batch": args.batch_size,
            "lr": args.lr, "train_clips": args.num_train, "frames": 8, "image_size": args.image_size,
            "student": args.student, "teacher": args.teacher, "text_encoder": "all-MiniLM-L6-v2 (frozen)"},
            "paper": PAPER}  # fmt: skip
    (out_dir / "table4.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    lines = [f"# Table 4 analogue: text-video retrieval (t2v) on moving Fashion-MNIST, {meta['date']}", "",
             f"Machine: {meta['machine']}. Budget per row: {args.steps} steps x batch {args.batch_size}, lr {args.lr}, "
             f"{args.num_train} training clips (8 frames, {args.image_size} px); held-out: 160 clips, one per caption. "
             f"Student `{args.student}`; teacher DINOv2-S/14 (offline). Paper: {PAPER}.", "",
             "| row | seeds | R@1 | R@5 | R@10 | MedianR | MeanR |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in ROWS:
        runs = [r["metrics"] for key, r in results.items() if key.rsplit("-s", 1)[0] == row]
        if not runs:
            continue

        def cell(name, runs=runs):
            values = [m[f"eval_t2v_{name}"] for m in runs]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.1f}{spread}"

        lines.append(
            f"| {row} | {len(runs)} | " + " | ".join(cell(n) for n in ("R@1", "R@5", "R@10", "MedianR", "MeanR")) + " |"
        )
    (out_dir / "table4.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", default="videomamba-s,num_hidden_layers=2,hidden_size=192")
    parser.add_argument("--text-encoder", default=default_text_encoder())
    parser.add_argument("--image-size", type=int, default=42, help="frames (56 px canvases) resized to this size")
    parser.add_argument("--num-train", type=int, default=240)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--work-dir", type=Path, default=Path("table4-work"))
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "experiments")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    store = args.out_dir / "table4.json"
    results = json.loads(store.read_text())["results"] if store.is_file() else {}
    prep = prepare(args, args.work_dir)
    for seed in args.seeds:
        for row in args.rows:
            key = f"{row}-s{seed}"
            if key in results:
                continue
            started = time.perf_counter()
            if row in TEACHER_ROWS:
                run = teacher_run(args, prep, seed, TEACHER_ROWS[row], args.work_dir)
                run = {key: value for key, value in run.items() if key != "train_embeddings"}
            else:
                run = train_student(args, prep, row, seed, args.work_dir)
            results[key] = {**run, "seconds": round(time.perf_counter() - started, 1)}
            write_tables(results, args, args.out_dir)
            print(key, {k: round(v, 2) for k, v in run["metrics"].items() if "t2v" in k}, flush=True)


if __name__ == "__main__":
    main()
