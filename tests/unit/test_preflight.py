"""Preflight: every problem found before heavy work, each one sentence, all reported together."""

from __future__ import annotations

import importlib.util
import shutil
from collections import namedtuple

import pytest
import torch
from tiny import tiny_llama_config, tiny_state, write_checkpoint

from tulu_quant import preflight
from tulu_quant.config import RunConfig
from tulu_quant.preflight import PreflightError


def config(tmp_path, base, **values):
    return RunConfig.model_validate(
        {"model": {"name": "t", "base": str(base), "diff": str(base)}, "run_dir": str(tmp_path / "run"), **values}
    )


def test_missing_inputs_libraries_and_device_all_reported(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gptqmodel" else real(name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config(tmp_path, tmp_path / "nowhere", quantize={"device": "cuda"})
    with pytest.raises(PreflightError) as err:
        preflight.check(cfg, ["recover", "quantize"])
    text = str(err.value)
    assert "model.base: " in text and "does not exist" in text and "model.diff: " in text
    assert "needs the Python package gptqmodel" in text and "no CUDA device" in text


def test_disk_estimate_and_shortage(tmp_path, monkeypatch):
    base = write_checkpoint(tmp_path / "base", tiny_state(tiny_llama_config(), torch.float16), tiny_llama_config())
    cfg = config(tmp_path, base)
    estimate = preflight.check(cfg, ["recover", "quantize"])
    params = sum(t.numel() for t in tiny_state(tiny_llama_config()).values())
    assert estimate["recover"] == params * 2 and 0 < estimate["quantize"] < estimate["recover"]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 100))
    with pytest.raises(PreflightError, match=r"only 100 B is free"):
        preflight.check(cfg, ["recover"])
