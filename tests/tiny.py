"""Tiny random LLaMA checkpoints written in any of the formats users have (import as `from tiny import ...`)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def tiny_llama_config(vocab_size: int = 96, tie: bool = False, **overrides) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "rope_theta": 10000.0, "vocab_size": vocab_size,
        "tie_word_embeddings": tie, "bos_token_id": 1, "eos_token_id": 2,
    }  # fmt: skip
    config.update(overrides)
    return config


def tiny_state(config: dict, dtype=None, seed: int = 0, scale: float = 0.05) -> dict:
    """Random weights with LLaMA's key names and shapes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = d // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes |= {p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                   p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                   p + "mlp.gate_proj.weight": (i, d), p + "mlp.up_proj.weight": (i, d), p + "mlp.down_proj.weight": (d, i),
                   p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)}  # fmt: skip
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    state = {k: torch.randn(s, generator=g) * scale + (1.0 if len(s) == 1 else 0.0) for k, s in shapes.items()}
    return {k: t.to(dtype) for k, t in state.items()} if dtype is not None else state


def write_checkpoint(root: Path, state: dict, config: dict | None, fmt: str = "safetensors", shards: int = 1) -> Path:
    """Write a state dict as HF does: single file or shards + index, safetensors or PyTorch .bin."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    names = list(state)
    groups = [names[k::shards] for k in range(shards)]
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    files = [f"{stem}.{ext}"] if shards == 1 else [f"{stem}-{k + 1:05d}-of-{shards:05d}.{ext}" for k in range(shards)]
    for group, fname in zip(groups, files):
        part = {n: state[n].contiguous() for n in group}
        save_file(part, root / fname, metadata={"format": "pt"}) if fmt == "safetensors" else torch.save(part, root / fname)
    if shards > 1:
        index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
        weight_map = {n: f for group, f in zip(groups, files) for n in group}
        (root / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root
