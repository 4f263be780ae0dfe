"""Bad input, tried as a new user would: each case is one message (what is wrong, how to fix it), exit code 2, no
traceback, nothing written. Cheap cases use a config-only teacher: a check that passes on it ran before any
weight was read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from huggingface_hub import constants
from PIL import Image as PILImage
from transformers import CLIPConfig, TrainingArguments, ViTConfig, ViTForImageClassification
from transmamba.conversion.cli import main as convert_main
from transmamba.trainers.args import DistillationArguments
from transmamba.trainers.train import main as train_main

from transmamba.data import load_image_dataset

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
             intermediate_size=64, num_labels=3)  # fmt: skip
SSM = "state_size=4,time_step_rank=2,scan_backend=sequential"


def one_error(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


def edit_config(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


def image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            PILImage.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def config_only(tmp_path) -> Path:
    ViTConfig(**SHAPE).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def truncated_teacher(tmp_path: Path) -> Path:
    ViTForImageClassification(ViTConfig(**SHAPE)).save_pretrained(tmp_path / "teacher")
    weights = tmp_path / "teacher" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return tmp_path / "teacher"


def custom_code_teacher(tmp_path: Path) -> Path:
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "my-vision-net", "hidden_size": 32,
                                                    "auto_map": {"AutoConfig": "my_net.MyConfig"}}))  # fmt: skip
    return folder


def clip_teacher(tmp_path: Path) -> Path:
    config = CLIPConfig()
    config.architectures = ["CLIPForImageClassification"]
    config.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


# Each maker gets (the config-only teacher, an empty folder for teachers of its own).
TEACHER_CASES = {
    "truncated weights": (lambda t, p: truncated_teacher(p), "damaged or incomplete"),
    "hidden_size abc": (lambda t, p: edit_config(t, hidden_size="abc"), "hidden_size is 'abc'"),
    "patch_size 0": (lambda t, p: edit_config(t, patch_size=0), "patch_size is 0, but it must be a positive integer"),
    "layers -1": (lambda t, p: edit_config(t, num_hidden_layers=-1), "num_hidden_layers is -1"),
    "custom code": (lambda t, p: custom_code_teacher(p), "custom-code model"),
    "CLIP classifier": (lambda t, p: clip_teacher(p), "is a 'clip' model; `transmamba convert` subclones ViT-family"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TEACHER_CASES))
def test_bad_teacher_folder(tmp_path, config_only, capsys, case):
    make, message = TEACHER_CASES[case]
    (tmp_path / "t").mkdir()
    teacher = make(config_only, tmp_path / "t")
    spec = "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2"
    capsys.readouterr()  # what building the teacher printed
    out = tmp_path / "out"
    one_error(capsys, convert_main(["--teacher", str(teacher), "--student", spec, "--output", str(out)]), message)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_hidden_layers=0", "num_hidden_layers must be a positive integer"),
        ("num_hidden_layers=-1", "num_hidden_layers must be a positive integer"),
        ("state_size=0", "state_size must be a positive integer"),
        ("hidden_size=abc", "hidden_size='abc' is invalid"),
        ("hidden_size=0", "hidden_size must be a positive integer"),
        ("expand=0", "expand must be a positive integer"),
        ("scan_directions=[diag]", "unknown ['diag']; choose from forward"),
    ],
)
def test_bad_student_spec(tmp_path, config_only, capsys, override, message):
    argv = ["--teacher", str(config_only), "--student", f"pmamba-t,{override}", "--output", str(tmp_path / "out")]
    one_error(capsys, convert_main(argv), message)
    assert not (tmp_path / "out").exists()


def empty_data(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def empty_saved(tmp_path: Path) -> Path:
    (tmp_path / "saved" / "train").mkdir(parents=True)  # what a save_to_disk folder looks like, minus the files
    return tmp_path / "saved"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (empty_data, "is an empty folder; put images in class_name/"),
        (empty_saved, "is an empty folder"),
        (lambda p: image_folder(p / "one", ["cat"]), "has 1 class (cat); image classification needs at least two"),
    ],
)
def test_bad_data_for_convert(tmp_path, config_only, capsys, make, message):
    data = make(tmp_path)
    argv = ["--teacher", str(config_only), "--student", "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2",
            "--output", str(tmp_path / "out"), "--data", str(data)]  # fmt: skip
    capsys.readouterr()
    one_error(capsys, convert_main(argv), message)


def test_convert_data_takes_a_save_to_disk_folder(tmp_path):
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    images = [PILImage.new("RGB", (8, 8), (i, 0, 0)) for i in range(6)]
    Dataset.from_dict({"image": images, "label": [0, 1] * 3}, features=features).save_to_disk(tmp_path / "saved")
    data = load_image_dataset(str(tmp_path / "saved"), option="--data")
    assert set(data) == {"train", "test"} and len(data["train"]) + len(data["test"]) == 6


@pytest.mark.parametrize(
    ("make_output", "extra", "message"),
    [
        (lambda p: Path("/proc/self/transmamba-out"), [], "is not writable"),
        (lambda p: (p / "file").write_text("x") and p / "file", [], "is a file, not a folder"),
        (lambda p: p / "missing" / "out", [], "does not exist; create it first"),
        (lambda p: p, ["--overwrite"], "holds files that transmamba did not write"),
    ],
)
def test_output_that_must_not_be_written(tmp_path, config_only, capsys, make_output, extra, message):
    (tmp_path / "notes.txt").write_text("mine")
    output = make_output(tmp_path)
    argv = ["--teacher", str(config_only), "--student", "pmamba-t", "--output", str(output), *extra]
    one_error(capsys, convert_main(argv), message)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # --output . --overwrite no longer wipes a folder


# --- transmamba train ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from test_train_support import save_student, save_teacher

    folder = tmp_path_factory.mktemp("pair")
    return save_teacher(folder / "teacher"), save_student(folder / "student")


def _digits_folder(tmp_path: Path, test_labels: list[int] | None = None) -> Path:
    from test_train_support import digits

    data = digits(test_size=40)
    data = DatasetDict({"train": data["train"].select(range(64)), "test": data["test"]})
    if test_labels is not None:
        test = data["test"].cast_column("label", data["test"].features["label"].__class__(num_classes=20))
        labels = test_labels + test["label"][len(test_labels) :]
        data["test"] = test.remove_columns("label").add_column("label", labels)
    data.save_to_disk(tmp_path / "data")
    return tmp_path / "data"


def _train_argv(teacher, student, dataset, output: Path, *extra: str) -> list[str]:
    return ["--teacher", str(teacher), "--student", str(student), "--dataset", str(dataset), "--output_dir",
            str(output), "--use_cpu", "--max_steps", "1", "--per_device_train_batch_size", "8", "--disable_tqdm",
            "true", "--save_strategy", "no", *extra]  # fmt: skip


def _broken_student(tmp_path: Path, student: str, how: str) -> Path:
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(student, folder)
    if how == "mismatch":
        edit_config(folder, state_size=8)
    elif how == "truncated":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        edit_config(folder, hidden_size="abc")
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatch", "config.json and model.safetensors disagree"),
        ("truncated", "damaged or incomplete"),
        ("abc", "hidden_size is 'abc', but it must be a positive integer"),
        ("eval_label", "split 'test' has label 17"),
        ("output_file", "is a file; pass a folder"),
        ("offline_hub", "HF_HUB_OFFLINE=1 forbids downloading it"),
        ("no_token", "--push_to_hub needs a Hugging Face token"),
        ("one_class", "has 1 class"),
        ("empty", "is an empty folder"),
        ("resume_missing", "no complete checkpoint to resume from"),
    ],
)
def test_bad_input_to_train(tmp_path, pair, capsys, monkeypatch, case, message):
    teacher, student = pair
    dataset = _digits_folder(tmp_path, [17] if case == "eval_label" else None)
    output, extra = tmp_path / "out", []
    if case in ("mismatch", "truncated", "abc"):
        student = _broken_student(tmp_path, student, case)
    elif case == "output_file":
        output.write_text("x")
    elif case == "offline_hub":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        teacher = "someone/not-cached-teacher"
    elif case == "no_token":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        extra = ["--push_to_hub", "true", "--hub_model_id", "me/student"]
    elif case == "one_class":
        dataset = image_folder(tmp_path / "one", ["cat"])
    elif case == "empty":
        dataset = empty_data(tmp_path)
    elif case == "resume_missing":
        extra = ["--resume_from_checkpoint", "last"]
    capsys.readouterr()  # what building the inputs printed
    one_error(capsys, train_main(_train_argv(teacher, student, dataset, output, *extra)), message)
    assert not output.is_dir() or not any(output.iterdir())  # nothing trained, nothing written


def test_unlabelled_rows_are_dropped_with_a_count_and_a_teacher_without_processor_works(tmp_path, pair, caplog):
    """-1 rows (Hub test splits) are dropped before training; the student's processor stands in for the teacher's."""
    import shutil

    from transformers import ViTImageProcessorPil
    from transmamba.trainers.train import train

    teacher, student = pair
    bare_teacher, with_processor = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(teacher, bare_teacher)
    (bare_teacher / "preprocessor_config.json").unlink()
    shutil.copytree(student, with_processor)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(with_processor)
    dataset = _digits_folder(tmp_path, [-1, -1, -1])
    args = DistillationArguments(teacher=str(bare_teacher), student=str(with_processor), dataset=str(dataset),
                                 max_eval_samples=16)  # fmt: skip
    training = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1,
                                 per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True)  # fmt: skip
    result = train(args, training)
    assert "dropped 3 unlabelled rows (label -1) of 40 in split 'test'" in caplog.text
    assert "eval_accuracy" in result.metrics and (tmp_path / "out" / "model.safetensors").is_file()


def test_headless_teacher_without_processor_says_which_image_size(tmp_path, capsys, caplog):
    from transformers import Dinov2Config

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, mlp_ratio=2)
    config.image_size = 518  # as facebook/dinov2-small records it
    config.save_pretrained(tmp_path / "dinov2")
    spec = "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2"
    argv = ["--teacher", str(tmp_path / "dinov2"), "--student", spec, "--output", str(tmp_path / "out")]
    one_error(capsys, convert_main(argv), "has no weights (model.safetensors)")
    assert "no preprocessor_config.json: the student takes the image size of its config, 518 px" in caplog.text


def test_partials_of_live_writers_are_kept_and_dead_ones_removed(tmp_path):
    from transmamba.folders import LOCK_SUFFIX, atomic_folder, remove_dead_partials

    output = tmp_path / "model"
    with atomic_folder(output) as live:
        (live / "config.json").write_text("{}")
        dead = tmp_path / ".model.partial-1-dead"  # a writer SIGKILLed mid-write: nobody holds its lock
        dead.mkdir()
        (dead / "model.safetensors").write_text("half")
        Path(str(dead) + LOCK_SUFFIX).write_text("")
        assert remove_dead_partials(output) == [dead]  # the live writer's folder (this one) stays
        assert live.is_dir() and not dead.exists()
    assert (output / "config.json").is_file() and not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_stages_never_delete_a_folder_they_did_not_write(tmp_path):
    from transmamba.stages import Stages

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that transmamba did not write"):
        Stages(tmp_path, ["data"]).run("data", "x", {}, lambda d: ({}, []))
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_cached_teacher_outputs_need_no_teacher_and_missing_ones_are_named(tmp_path):
    """`run` trains against cached teacher outputs without loading the teacher; without them, one clear error."""
    import torch
    from test_train_support import student_config
    from transmamba.modeling_transmamba import TransMambaForImageClassification
    from transmamba.trainers.build import build_trainer

    from transmamba.run_training import TensorColumns

    student = TransMambaForImageClassification(student_config())
    pixels, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    cached = {"teacher_tokens": torch.randn(8, 17, 32), "teacher_logits": torch.randn(8, 10)}
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1,
                             per_device_train_batch_size=4, save_strategy="no", remove_unused_columns=False,
                             disable_tqdm=True)  # fmt: skip
    trainer = build_trainer(student, "wsab", args, TensorColumns(pixel_values=pixels, labels=labels, **cached),
                            teacher_dim=32)  # fmt: skip
    assert trainer.teacher is None and trainer.train().training_loss > 0
    bare = build_trainer(student, "wsab", args, TensorColumns(pixel_values=pixels, labels=labels), teacher_dim=32)
    with pytest.raises(ValueError, match="needs the teacher's outputs: pass teacher=.* or batches that carry cached"):
        bare.train()
