"""Checks before any heavy work: inputs exist, the disk can hold every output, the device and libraries are there.

Each problem is one sentence; all of them are reported at once, so a user fixes everything in one go.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from . import stages
from .config import RunConfig, load_suite
from .errors import UserError
from .progress import human_bytes

HUB_SOURCES = {"wikitext2", "tulu-sft", "c4"}


class PreflightError(UserError, RuntimeError):
    """Every problem found before any heavy work, one sentence each."""


def count_params(model_dir: Path) -> tuple[int, int, int]:
    """(parameters, embedding + lm_head parameters, hidden size) from a model's safetensors headers or config."""
    from .checkpoint import open_checkpoint

    ckpt = open_checkpoint(model_dir)
    total = sum(t.numel for t in ckpt.tensors.values())
    embed = sum(t.numel for n, t in ckpt.tensors.items() if n.endswith(("embed_tokens.weight", "lm_head.weight")))
    config_path = Path(model_dir) / "config.json"
    hidden = json.loads(config_path.read_text()).get("hidden_size", 0) if config_path.is_file() else 0
    return total, embed, hidden


def estimate_disk(cfg: RunConfig, params: int, embed: int) -> dict[str, int]:
    """Bytes each listed stage writes (upper estimates)."""
    from .stages.export_gguf import estimated_bytes

    bits = cfg.quantize.bits
    per_group = 4 / cfg.quantize.group_size if cfg.quantize.group_size > 0 else 0  # fp16 scale + packed zero per group
    quantized = int((params - embed) * (bits + per_group * 8) / 8 * 1.05 + embed * 2)
    onnx_bytes = {"int4": quantized + embed * 2, "fp16": params * 2, "fp32": params * 4}[cfg.export_onnx.precision]
    estimates = {
        "standin": 10**9,
        "recover": params * {"float16": 2, "bfloat16": 2, "float32": 4}[cfg.recover.dtype],
        "calibrate": cfg.calibrate.num_samples * cfg.calibrate.seq_len * 8 + 10**6,
        "quantize": quantized,
        "validate": 50 * 10**6,
        "export_onnx": int(onnx_bytes * 1.05),
        "export_gguf": estimated_bytes(cfg.export_gguf.types, params, cfg.export_gguf.source_type),
        "publish": 10**6,  # hard links to the checkpoint on the same file system
    }
    return {stage: estimates[stage] for stage in cfg.stages}


def check(cfg: RunConfig, names: list[str]) -> dict[str, int]:
    """Raise PreflightError listing every problem; return the disk estimate per stage."""
    problems: list[str] = []
    if "recover" in names and "standin" not in cfg.stages:
        for key in ("base", "diff"):
            path = getattr(cfg.model, key)
            if path is None:
                problems.append(f"model.{key} is not set; pass --{key} (make quantize {key.upper()}=...) or set it.")
            elif not path.is_dir():
                problems.append(
                    f"model.{key}: {path} does not exist; pass --{key} (make quantize {key.upper()}=...) "
                    "pointing at the downloaded model directory."
                )
    for stage in names:
        for module, hint in stages.info(stage).requires:
            if importlib.util.find_spec(module) is None:
                problems.append(
                    f"stage {stage} needs the Python package {module}, which is not installed; run `{hint}`."
                )
    if "quantize" in names and cfg.quantize.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append(
                "quantize.device is cuda but no CUDA device is visible; use device: auto or cpu, or run on a GPU "
                "machine."
            )
    sources = {w.source for w in cfg.calibrate.mix}
    if "validate" in names:
        sources |= set(load_suite(cfg.validate_.suite).perplexity.sources)
    if "calibrate" in names and sources & HUB_SOURCES and importlib.util.find_spec("datasets") is None:
        problems.append(
            f"data sources {sorted(sources & HUB_SOURCES)} come from the Hugging Face Hub through `datasets`, "
            "which is not installed; run `pip install 'tulu-quant[hub]'` or use offline sources."
        )

    estimate: dict[str, int] = {}
    base = cfg.model.base
    source = base if base is not None and base.is_dir() and "standin" not in names else None
    if source is not None and not problems:
        try:
            params, embed, _ = count_params(source)
        except (ValueError, OSError) as err:
            problems.append(str(err))
        else:
            estimate = {k: v for k, v in estimate_disk(cfg, params, embed).items() if k in names}
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(cfg.run_dir).free
            need = sum(estimate.values())
            if need > free:
                detail = ", ".join(f"{k} {human_bytes(v)}" for k, v in estimate.items())
                problems.append(
                    f"{cfg.run_dir}: the stages to run need about {human_bytes(need)} ({detail}) but only "
                    f"{human_bytes(free)} is free; free space or choose another run_dir."
                )
    if problems:
        if len(problems) == 1:  # one problem: the one sentence every error is
            raise PreflightError(problems[0])
        raise PreflightError("preflight found problems before any heavy work:\n  - " + "\n  - ".join(problems))
    return estimate
