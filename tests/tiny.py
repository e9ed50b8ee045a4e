"""Tiny random LLaMA checkpoints written in any of the formats users have (import as `from tiny import ...`)."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_llama_config(vocab_size: int = 96, tie: bool = False, **overrides) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
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
        shapes |= {
            p + "self_attn.q_proj.weight": (d, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, d),
            p + "mlp.gate_proj.weight": (i, d),
            p + "mlp.up_proj.weight": (i, d),
            p + "mlp.down_proj.weight": (d, i),
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
        }
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
        save_file(part, root / fname, metadata={"format": "pt"}) if fmt == "safetensors" else torch.save(
            part, root / fname
        )
    if shards > 1:
        index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
        weight_map = {n: f for group, f in zip(groups, files) for n in group}
        (root / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root


def bpe_tokenizer(text: str, specials=("<s>", "</s>", "<pad>"), repeat: int = 3, bos_prefix: bool = True):
    """A byte-level BPE tokenizer of up to 300 tokens trained on `text` on the spot; specials get ids 0, 1, 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(specials),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text] * repeat, trainer)
    if bos_prefix:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    names = dict(zip(("bos_token", "eos_token", "pad_token" if specials[2] == "<pad>" else "unk_token"), specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def sentencepiece_tokenizer(text: str, folder: Path, vocab_size: int = 320):
    """A LLaMA-1-style tokenizer (SentencePiece BPE with byte fallback; <unk> 0, <s> 1, </s> 2) trained on `text` on the
    spot: tokenizer.model in `folder`, loaded by transformers' LlamaTokenizer (what Tulu's tokenizer is)."""
    from transformers import LlamaTokenizer

    from benchmarks.rehearse import sentencepiece_bytes

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(sentencepiece_bytes(text.split(". ") * 20, vocab_size))
    return LlamaTokenizer.from_pretrained(folder)


def word_tokenizer(words: list[str], chat_tokens: bool = False):
    """A real tokenizer over a few words (WordLevel; <s>, </s>, <pad>, <unk> first) that adds BOS and decodes to plain
    words. chat_tokens: <|user|> and <|assistant|> as ordinary added tokens, so a tulu prompt tokenizes and a reply
    can contain them."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<s>", "</s>", "<pad>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_tokens:
        tokenizer.add_tokens([AddedToken("<|user|>", normalized=False), AddedToken("<|assistant|>", normalized=False)])
    return tokenizer


def save_tiny_hf(
    root: Path,
    tokenizer,
    *,
    seed: int = 0,
    dtype=None,
    vocab_size: int | None = None,
    head_scale: float = 1.0,
    silent_rows: int = 0,
    **config,
) -> Path:
    """A random 2-layer LLaMA (hidden 64, intermediate 128, 4/2 heads) with `tokenizer`, saved as transformers does.
    `config` overrides LlamaConfig fields (tie_word_embeddings, max_position_embeddings, ...); `head_scale` multiplies
    lm_head, sharpening the output distribution; the first `silent_rows` tokens get logit 0 (below the best random
    logit: a model that never emits its special tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    special = {"bos_token_id": 0, "eos_token_id": 1} | ({"pad_token_id": 2} if tokenizer.pad_token else {})
    values = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size or len(tokenizer),
        "max_position_embeddings": 64,
        **special,
        **config,
    }
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**values))
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
        model.lm_head.weight[:silent_rows] = 0
    model.to(dtype or torch.float16).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def write_calibration(
    model_dir: Path, out: Path, n: int = 16, length: int = 64, seed: int = 0, vocab: int = 300
) -> Path:
    """A calibration folder as the calibrate stage writes it, with random token rows (ids 3..vocab-1)."""
    import torch
    from safetensors.torch import save_file

    from tulu_quant.stages.calibrate import RECORD_FILE, SAMPLES_FILE, tokenizer_sha256

    out.mkdir(parents=True, exist_ok=True)
    rows = torch.randint(3, vocab, (n, length), generator=torch.Generator().manual_seed(seed))
    save_file({"input_ids": rows}, out / SAMPLES_FILE)
    (out / RECORD_FILE).write_text(json.dumps({"tokenizer_sha256": tokenizer_sha256(model_dir), "num_samples": n}))
    return out


def run_config(**sections):
    """A RunConfig with the given sections (dicts, models, or dotted keys with `__`, e.g. model__chat_format="tulu"),
    every other value its default: what each stage's run() takes."""
    from tulu_quant.config import RunConfig

    data: dict = {}
    for key, value in sections.items():
        *parents, leaf = key.split("__")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value.model_dump(exclude_unset=True) if hasattr(value, "model_dump") else value
    if "validate_" in data:
        data["validate"] = data.pop("validate_")
    return RunConfig.model_validate(data)


SENTENCES = "The quick brown fox jumps over the lazy dog while the old river runs south past the mill and the market. "


def save_tiny_sentencepiece(root: Path, seed: int = 0, **config) -> Path:
    """A random 2-layer LLaMA in float16 that llama.cpp converts: a LLaMA-1-style SentencePiece tokenizer, hidden 256
    and intermediate 512 (widths that k-quants' blocks of 256 tile)."""
    tokenizer = sentencepiece_tokenizer(SENTENCES * 4, root)
    values = {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.05,
        **config,
    }
    return save_tiny_hf(root, tokenizer, seed=seed, **values)


def export_tiny_gguf(model_dir: Path, out: Path, types=("F16", "Q8_0"), calib: Path | None = None, **settings):
    """`tulu-quant export-gguf` of a tiny model (no importance matrix unless calib, no verification unless asked)."""
    from tulu_quant.stages import export_gguf

    values = {"types": list(types), "imatrix": calib is not None, "verify": False, "threads": 2, **settings}
    cfg = run_config(export_gguf=values, model__name="tiny", model__chat_format="tulu", model__license="apache-2.0")
    return export_gguf.run(cfg, model_dir, out, calib, force=True, log_file=out.parent / f"{out.name}.log")
