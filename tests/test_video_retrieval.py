"""Text-video retrieval: R@K/MeanR on hand-made similarity matrices, a short run lowers the loss and saves both
towers, a missing caption column gets one clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForVideoClassification, BertConfig, BertModel, BertTokenizer, ViTConfig, ViTModel
from transmamba.conversion.convert_video import VideoConvertArguments, convert_video
from transmamba.modeling_transmamba import TransMambaForVideoTextRetrieval
from transmamba.trainers.retrieval import retrieval_metrics, retrieval_ranks
from transmamba.trainers.train import build_parser as train_parser
from transmamba.trainers.train import train as train_run
from transmamba.trainers.train_retrieval import build_parser, run
from transmamba.trainers.train_retrieval import main as retrieval_main

from transmamba.video_data import DIGIT_NOUNS, MOTIONS, SPEEDS, load_moving_clips

SPEC = "videomamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2,state_size=4,time_step_rank=2,num_frames=4"


def test_metrics_on_hand_made_similarities():
    # Text 0 finds its video first, text 1 third (two items beat it), text 2 second, text 3 first.
    sim = np.array([[9, 1, 2, 3], [5, 1, 4, 0], [0, 8, 3, 7], [1, 2, 3, 4]], dtype=float)
    sim[2] = [0, 1, 5, 7]
    assert retrieval_ranks(sim).tolist() == [1, 3, 2, 1]
    metrics = retrieval_metrics(sim)
    assert metrics == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MedianR": 1.5, "MeanR": 1.75}
    assert retrieval_metrics(np.eye(12))["R@1"] == 100.0
    ranks = retrieval_ranks(np.eye(12)[::-1])  # anti-diagonal: most rows rank their match last
    assert ranks.max() == 12
    # A constant matrix is a tie everywhere: ties count against the query, so it is not "perfect".
    assert retrieval_metrics(np.ones((20, 20)))["R@10"] == 0.0
    with pytest.raises(ValueError, match="square"):
        retrieval_ranks(np.ones((2, 3)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A converted tiny video student, a tiny BERT with a real WordPiece tokenizer, real offline clips."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("retrieval")
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                       intermediate_size=64)).save_pretrained(root / "vit")  # fmt: skip
    convert_video(VideoConvertArguments(teacher=str(root / "vit"), student=SPEC, output=root / "student", num_labels=8))
    words = {w for phrase in [*DIGIT_NOUNS, *MOTIONS, *SPEEDS, "a moving"] for w in phrase.split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    assert tokenizer.unk_token_id not in tokenizer("a digit 3 moving up and to the left quickly")["input_ids"]
    text = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64))  # fmt: skip
    text.save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    clips = load_moving_clips("moving_digits", num_train=48, num_frames=4, canvas=40, seed=0)
    clips.save_to_disk(root / "clips")
    return root


def _argv(root, out, *extra):
    return ["--student", str(root / "student"), "--text-encoder", str(root / "text"), "--dataset", str(root / "clips"),
            "--output-dir", str(out), "--per-device-train-batch-size", "8", "--per-device-eval-batch-size", "16",
            "--max-eval-samples", "32", "--learning-rate", "3e-3", "--logging-steps", "1", "--use-cpu",
            "--save-strategy", "no", "--eval-strategy", "no", "--projection-dim", "16", "--seed", "0",
            *extra]  # fmt: skip


def test_short_retrieval_run_lowers_the_loss_and_saves_both_towers(assets, tmp_path):
    out = tmp_path / "run"
    # The tiny random text tower trains too: frozen, its captions would be indistinguishable (a real MiniLM is not).
    extra = ["--num-train-epochs", "12", "--max-train-samples", "16", "--train-text-encoder"]
    argv = _argv(assets, out, *extra, "--teacher", str(assets / "vit"), "--distill-weight", "0.5")
    trainer = run(*build_parser().parse_args_into_dataclasses(args=argv))
    logs = trainer.state.log_history
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    assert len(losses) == 24 and all("distill_loss" in entry for entry in logs if "loss" in entry)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    info_nce = [entry["info_nce"] for entry in logs if "loss" in entry]
    assert np.mean(info_nce[-4:]) < 0.9 * np.mean(info_nce[:4]), info_nce  # the retrieval loss itself
    final = logs[-1]
    assert {"eval_t2v_R@1", "eval_t2v_R@5", "eval_t2v_R@10", "eval_t2v_MeanR", "eval_v2t_R@1"} <= set(final)
    assert 1.0 <= final["eval_t2v_MeanR"] <= 32.0
    model = TransMambaForVideoTextRetrieval.from_pretrained(out).eval()
    trained = trainer.model.model
    for mine, theirs in zip(model.state_dict().values(), trained.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs)  # both towers, projections and the logit scale round-trip
    assert (out / "tokenizer.json").is_file() and (out / "preprocessor_config.json").is_file()


def test_frozen_text_tower_has_no_gradients_and_no_dropout(assets):
    from transmamba.trainers.retrieval import build_retrieval_model
    from transmamba.trainers.train_retrieval import load_video_student

    model = build_retrieval_model(load_video_student(str(assets / "student")), str(assets / "text"), 16).train()
    assert not any(p.requires_grad for p in model.text_model.parameters())
    assert not model.text_model.training and model.video_model.training
    saved = BertModel.from_pretrained(assets / "text").embeddings.word_embeddings.weight
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight, saved)


def test_frame_target_compares_each_tubelet_with_its_frames(assets):
    """Per tubelet against the teacher's features of its frames, by hand; reversing the clip's frames changes this
    loss but not the frame-mean target's, which cannot tell a motion from its reverse."""
    from transmamba.trainers.retrieval import RetrievalDistillation, build_retrieval_model
    from transmamba.trainers.train_retrieval import load_video_student

    torch.manual_seed(0)
    model = build_retrieval_model(load_video_student(str(assets / "student")), str(assets / "text"), 16).train()
    pixels, ids = torch.randn(2, 4, 3, 32, 32), torch.randint(5, 20, (2, 6))
    teacher = torch.randn(2, 4, 24)  # (batch, frames, teacher width)
    losses = {}
    for target in ("frames", "video"):
        wrapper = RetrievalDistillation(model, 24, beta=1.0, target=target).train()
        for name, frames in (("forward", teacher), ("reversed", teacher.flip(1))):
            losses[target, name] = wrapper(pixels, ids, teacher_frames=frames).logs["distill_loss"]
    tokens = model(pixel_values=pixels, input_ids=ids).video_last_hidden_state  # [cls, (t n)], tubelet size 1
    per_tubelet = tokens[:, 1:].reshape(2, 4, -1, tokens.shape[-1]).mean(2)
    by_hand = 1 - torch.nn.functional.cosine_similarity(wrapper.calibration(per_tubelet), teacher, dim=-1)
    frames_wrapper = RetrievalDistillation(model, 24, beta=1.0, target="frames")
    frames_wrapper.calibration.load_state_dict(wrapper.calibration.state_dict())
    torch.testing.assert_close(frames_wrapper(pixels, ids, teacher_frames=teacher).logs["distill_loss"],
                               by_hand.mean())  # fmt: skip
    torch.testing.assert_close(losses["video", "forward"], losses["video", "reversed"])
    assert abs(losses["frames", "forward"] - losses["frames", "reversed"]) > 1e-3
    with pytest.raises(ValueError, match="video, frames"):
        RetrievalDistillation(model, 24, beta=1.0, target="clip")


def test_train_command_trains_a_video_classifier_with_wsab(assets, tmp_path):
    """`transmamba train` on a video student: motion classification, WSAB against the teacher's frame tokens."""
    out = tmp_path / "classifier"
    argv = ["--teacher", str(assets / "vit"), "--student", str(assets / "student"), "--dataset", str(assets / "clips"),
            "--output-dir", str(out), "--max-steps", "3", "--per-device-train-batch-size", "4", "--logging-steps", "1",
            "--max-eval-samples", "8", "--use-cpu", "--save-strategy", "no", "--eval-strategy", "no"]  # fmt: skip
    trainer = train_run(*train_parser().parse_args_into_dataclasses(args=argv)).trainer
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all("distill_loss/backward" in entry and "task_loss" in entry for entry in logs)
    model = AutoModelForVideoClassification.from_pretrained(out)
    assert type(model).__name__ == "TransMambaForVideoClassification"
    assert "eval_accuracy" in trainer.state.log_history[-1]
    trained = trainer.model.student.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, trained[name])


def test_missing_caption_column_gets_one_clear_message(assets, tmp_path, capsys):
    code = retrieval_main(_argv(assets, tmp_path / "bad", "--caption-column", "text", "--max-steps", "1"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no caption column 'text' (--caption-column)" in err and "'caption'" in err
    assert not (tmp_path / "bad").exists()
