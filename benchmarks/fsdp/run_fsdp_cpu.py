"""Does FSDP train a student on 2 CPU processes (gloo)? Launches `transmamba.trainers.train` under
`accelerate launch --config_file fsdp_cpu.yaml` on a tiny teacher/student and digits, then loads the exported
student in this process. Prints one JSON line: return code, the log's tail or the error, and the loaded check.

Measured 2026-12-01 (2-core CPU, shared, load ~15): exit 0 in 93 s, 2 processes, the exported student loads
(11,834 parameters, all 46 tensors). But accelerate runs it as DDP: `PartialState().distributed_type` is MULTI_CPU
under this config (FSDP is enabled only for GPU-like device types), so this shows the config is harmless on CPU,
not that FSDP shards on CPU.

    python benchmarks/fsdp/run_fsdp_cpu.py /tmp/fsdp-run
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_train_support import digits, save_student, save_teacher  # noqa: E402


def main(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    digits().save_to_disk(work / "digits")
    teacher, student = save_teacher(work / "teacher"), save_student(work / "student", "vim-t")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Path(__file__).with_name("fsdp_cpu.yaml")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--main_process_port", str(port), "-m", "transmamba.trainers.train",
        "--teacher", teacher, "--student", student, "--dataset", str(work / "digits"), "--use_cpu",
        "--max_train_samples", "64", "--max_eval_samples", "16", "--per_device_train_batch_size", "8",
        "--num_train_epochs", "1", "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
        "--output_dir", str(work / "out"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    result = {"returncode": proc.returncode, "seconds": round(time.time() - start, 1)}
    log = proc.stdout + proc.stderr
    errors = [line for line in log.splitlines() if "Error" in line or "error:" in line]
    result["first_error"] = errors[0][:500] if errors else None
    result["log_tail"] = log[-1500:]
    if proc.returncode == 0:
        from transmamba.modeling_transmamba import TransMambaForImageClassification

        model = TransMambaForImageClassification.from_pretrained(work / "out")
        result["loaded_parameters"] = sum(p.numel() for p in model.parameters())
        result["saved_files"] = sorted(p.name for p in (work / "out").iterdir())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/transmamba-fsdp")))
