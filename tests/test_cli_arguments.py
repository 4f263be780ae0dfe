"""Typed arguments of `card` and `demo`, and what `--help` and an argument error of every command cost: one
message, exit code 2, no traceback, nothing written, and no torch import before the command needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from test_bad_input import one_error
from test_cards import RESULTS
from transmamba.conversion.args import VIDEO_STUDENT_PREFIX, wants_video
from transmamba.model_cards.cli import CardArguments, card
from transmamba.model_cards.results import RESULTS_NAME, RunResults
from transmamba.modeling_transmamba import VIDEO_PRESETS, TransMambaConfig, TransMambaForImageClassification

from transmamba.cli import main as cli_main
from transmamba.demo import DemoArguments, demo


def results_folder(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / RESULTS_NAME).write_text(json.dumps({**RESULTS, **changes}))
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "is not a folder"),
        (lambda root: (root / "empty").mkdir() or root / "empty", f"has no {RESULTS_NAME}"),
        (lambda root: results_folder(root, accuracy={"transmamba": 80.2}), "is not a fraction in [0, 1]"),
        (lambda root: results_folder(root, format="other/9"), "expected 'transmamba-results/1'"),
        (lambda root: results_folder(root, teacher={}), "lacks teacher.source"),
    ],
)
def test_bad_card_folder_is_one_message_and_writes_nothing(tmp_path, capsys, make, message):
    folder = make(tmp_path)
    one_error(capsys, cli_main(["card", "--folder", str(folder)]), message)
    assert not (folder / "README.md").exists()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CardArguments(folder)


def test_bad_results_json_is_named(tmp_path, capsys):
    folder = results_folder(tmp_path)
    (folder / RESULTS_NAME).write_text("{not json")
    one_error(capsys, cli_main(["card", str(folder)]), "is not valid JSON")


def test_card_takes_the_folder_both_ways_and_the_library_call_the_dataclass(tmp_path, capsys):
    folder = results_folder(tmp_path)
    assert cli_main(["card", "--folder", str(folder)]) == 0
    assert f"wrote {folder / 'README.md'}" in capsys.readouterr().out
    first = (folder / "README.md").read_text()
    (folder / "README.md").unlink()
    assert card(CardArguments(str(folder))) == folder / "README.md"
    assert (folder / "README.md").read_text() == first
    assert ModelCard.load(folder / "README.md").data.eval_results[0].metric_value == RESULTS["accuracy"]["transmamba"]
    assert RunResults.load(folder).model_name == RESULTS["model_name"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image-size", "0"], "--image_size must be at least 1"),
        (["--batch_size", "0", "--num-labels", "-3"], "--batch_size, --num_labels must be at least 1"),
        (["--presets", "pmamba-t", "nope"], "Unknown student preset 'nope'; choose one of pmamba-t"),
        (["--image-size", "100"], "image_size 100 is not divisible by patch_size 16"),
    ],
)
def test_bad_demo_arguments_are_one_message_before_any_model(capsys, argv, message):
    one_error(capsys, cli_main(["demo", *argv]), message)
    assert "preset" not in capsys.readouterr().out  # no table started


def test_demo_arguments_reject_an_empty_preset_list():
    with pytest.raises(ValueError, match="--presets is empty"):
        DemoArguments(presets=[])


def test_demo_reports_each_preset_it_built():
    (row,) = demo(DemoArguments(presets=["pmamba-t"], image_size=32, batch_size=1, num_labels=3))
    config = TransMambaConfig.from_preset("pmamba-t", image_size=32, num_labels=3)
    expected = sum(p.numel() for p in TransMambaForImageClassification(config).parameters())
    assert (row.preset, row.parameters, row.tokens) == ("pmamba-t", expected, 4)  # a 2x2 grid of 16-px patches
    assert row.directions == config.num_directions and row.logits_shape == (1, 3) and row.forward_s > 0


def test_training_help_lists_our_options_and_says_how_to_see_the_rest(capsys):
    with pytest.raises(SystemExit) as short:
        cli_main(["train-lm", "--help"])
    text = capsys.readouterr().out
    assert short.value.code == 0 and "--block_size" in text and "--help-training" in text
    assert "--learning_rate LEARNING_RATE" not in text and "--output_dir=transmamba-switch-lm" in text
    with pytest.raises(SystemExit) as full_help:
        cli_main(["train-lm", "--help-training"])
    assert full_help.value.code == 0
    full = capsys.readouterr().out
    assert "--block_size" in full and "--learning_rate LEARNING_RATE" in full and "--warmup_steps" in full


def test_a_training_option_is_not_read_as_an_abbreviation_of_ours(tmp_path, capsys):
    # `--project` (TrainingArguments) is a prefix of `--projection_dim` (ours): our first parse must not take it.
    argv = ["train-retrieval", "--student", str(tmp_path), "--project", "p", "--projection_dim", "0"]
    one_error(capsys, cli_main(argv), "--projection-dim, --max-length, --num-train-clips >= 1")


def test_video_presets_are_recognised_by_their_prefix():
    assert VIDEO_PRESETS and all(name.startswith(VIDEO_STUDENT_PREFIX) for name in VIDEO_PRESETS)
    assert wants_video(["--teacher", "t", "--student", "videomamba-t,num_frames=4"])
    assert wants_video(["--student=videomamba-s"]) and not wants_video(["--student", "pmamba-t"])


# Each command's --help and one error in its own options; the child reports the first that imported torch.
LIGHT = [
    ["--help"], ["card", "--help"], ["card", "missing-folder"], ["demo", "--help"], ["demo", "--batch-size", "0"],
    ["convert", "--help"], ["convert", "--teacher", "t", "--student", "pmamba-t", "--output", "o", "--num_batches",
                            "0"],
    ["convert", "--student", "videomamba-t", "--help"],
    ["convert", "--teacher", "t", "--student", "videomamba-t", "--output", "o", "--image-size", "0"],
    ["run", "--help"], ["run", "--steps", "0"], ["convert-lm", "--help"],
    ["convert-lm", "--teacher", "t", "--output", "o", "--ssm_chunk_size", "0"],
    ["train", "--help"], ["train", "--teacher", "t", "--student", "s", "--alpha", "2"],
    ["train-vlm", "--help"], ["train-vlm", "--teacher", "t", "--student", "s", "--alpha", "2"],
    ["train-lm", "--help"], ["train-lm", "--student", "s", "--alpha", "2"],
    ["train-retrieval", "--help"], ["train-retrieval", "--student", "s", "--projection_dim", "0"],
]  # fmt: skip
CHILD = """
import contextlib, io, json, sys
from transmamba.cli import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    heavy = [name for name in ("torch", "accelerate", "datasets") if name in sys.modules]
    print(json.dumps([argv, code, heavy]), flush=True)
"""


def test_help_and_argument_errors_import_no_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(LIGHT)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [argv for argv, _, _ in rows] == LIGHT
    for argv, code, heavy in rows:
        assert code == (0 if "--help" in argv else 2), argv
        assert heavy == [], f"{argv} imported {heavy}"
    assert not (tmp_path / "o").exists()
