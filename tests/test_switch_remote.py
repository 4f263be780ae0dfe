"""An exported TransMamba-switch folder loads and generates in a fresh Python that cannot import this project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import torch
from test_switch_lm import VOCAB, tiny

# `python -I -S`: no site processing, so the editable install's finder never loads; only plain site-packages.
CHILD = r"""
import json, sys
sys.path.append(sys.argv[1])
for name in ("transmamba", "modeling_transmamba"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable in the child: the test would not prove anything")
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
ids = torch.tensor([json.loads(sys.argv[3])])
out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, do_sample=False, pad_token_id=0)
print(json.dumps({"module": type(model).__module__, "tokens": out[0].tolist(),
                  "transpoints": model.config.layer_transpoints}))
"""


def test_exported_switch_model_generates_in_a_fresh_process(tmp_path):
    model = tiny([2, 5])
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_transmamba_switch.TransMambaSwitchForCausalLM"
    assert {"switch_ssm.py", "switch_cache.py", "mamba_lm.py"} <= {p.name for p in folder.glob("*.py")}
    prompt = torch.randint(1, VOCAB, (1, 4))
    expected = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=7, do_sample=False, pad_token_id=0
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            CHILD,
            sysconfig.get_paths()["purelib"],
            str(folder),
            json.dumps(prompt[0].tolist()),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.")
    assert result["transpoints"] == [2, 5]
    assert result["tokens"] == expected[0].tolist()
