"""An exported TransMamba-switch folder loads and generates in a fresh Python that cannot import this project."""

from __future__ import annotations

import json

import torch
from exported_code import auto_map_modules, code_closure, last_json, run_isolated
from test_switch_lm import VOCAB, tiny

CHILD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
ids = torch.tensor([json.loads(sys.argv[2])])
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
    assert {p.name for p in folder.glob("*.py")} == code_closure(*auto_map_modules(folder))
    prompt = torch.randint(1, VOCAB, (1, 4))
    expected = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=7, do_sample=False, pad_token_id=0
    )
    result = last_json(run_isolated(CHILD, [folder, json.dumps(prompt[0].tolist())], tmp_path))
    assert result["module"].startswith("transformers_modules.")
    assert result["transpoints"] == [2, 5]
    assert result["tokens"] == expected[0].tolist()
