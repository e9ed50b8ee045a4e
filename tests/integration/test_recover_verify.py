"""--verify on a real model: the working stand-in passes; the same weights in another conversion's rotary layout
fail."""

from __future__ import annotations

import json
import shutil

import pytest

from tulu_quant.checkpoint import open_checkpoint
from tulu_quant.config import StandinConfig
from tulu_quant.layerwise_verify import VerifyError, verify_model
from tulu_quant.stages.standin import converted_model

pytestmark = pytest.mark.slow


def permute(w, n_heads):
    """The q/k row permutation of HF's LLaMA conversion script, applied once more (a doubly converted base)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def test_verify_separates_working_and_scrambled_rotary(tmp_path):
    from safetensors.torch import save_file

    model_dir, _ = converted_model(StandinConfig())
    ok = verify_model(model_dir, None, 2, "tokenizer")
    assert ok["perplexity"] < 40 and ok["sample"].strip().startswith("The")

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    config = json.loads((model_dir / "config.json").read_text())
    ckpt, state = open_checkpoint(model_dir), {}
    with ckpt.reader() as get:
        for name in ckpt.tensors:
            t = get(name).clone()
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                t = permute(t, config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"])
            state[name] = t
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(VerifyError, match="converted by another script"):
        verify_model(broken, None, 1, "tokenizer")
