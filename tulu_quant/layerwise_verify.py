"""Run a LLaMA-architecture checkpoint layer by layer, so a 13B model can be checked with a few GB of RAM.

Only one decoder layer's weights are in memory at a time: embeddings -> layer 0 -> ... -> norm -> lm_head. Used by
``recover --verify``: it scores a short built-in English text and greedily generates a few tokens in the chat format.
A base converted by another script (old LLaMA conversions with a different rotary layout, say) has the right shapes and
config yet scores many times the perplexity of a working model: no shape or config check can see that, this does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from .checkpoint import open_checkpoint
from .errors import UserValueError
from .progress import NULL, Progress

log = logging.getLogger(__name__)

# Plain English prose written for this project (no third-party text). The working stand-in (135M) scores 21; the
# same weights with another conversion's rotary layout score 181 (see perplexity_limit).
VERIFY_TEXT = (
    "Rivers begin as small streams high in the hills, where rain and melting snow gather into narrow channels. As the "
    "water flows downhill, it joins other streams and grows wider and stronger. Over thousands of years, a river can "
    "carve deep valleys through solid rock and carry sand and mud far from where they started. When the river reaches "
    "flat land near the sea, it slows down and drops much of what it carried, building rich soil that farmers have "
    "used for planting crops since ancient times. Many of the oldest cities in the world were built beside rivers, "
    "because people needed fresh water to drink, fish to eat, and an easy way to move goods from one town to another. "
    "Today rivers still supply water to homes and factories, and dams use their flow to produce electricity. At the "
    "same time, scientists warn that pollution and heavy use can harm the plants and animals that depend on clean "
    "water. Protecting rivers means keeping waste out of them, saving water at home, and planting trees along their "
    "banks to hold the soil in place."
)
VERIFY_PROMPT = "What is the capital of France?"


class VerifyError(UserValueError):
    """The recovered model does not work (perplexity far above what a working model scores), or is not a
    LLaMA-architecture checkpoint this module can stream."""


def perplexity_limit(n_params: int) -> float:
    """The --verify limit: 4x an upper estimate of what a working model of this size scores on VERIFY_TEXT.

    Measured on the stand-in (SmolLM2-135M, docs/benchmarks.md): working 21.1; the same weights with the rotary
    layout of another conversion (q/k rows permuted) 181. Larger models score lower, so the bar tightens with size.
    """
    working = 25.0 if n_params < 1e9 else 12.0 if n_params < 1e10 else 9.0
    return 4 * working


class LayerStream:
    """Forward passes over a checkpoint on disk, loading one decoder layer at a time (float32, CPU)."""

    def __init__(self, model_dir: Path):
        from transformers import AutoConfig

        self.model_dir = Path(model_dir)
        self.config = AutoConfig.from_pretrained(self.model_dir)
        self.config._attn_implementation = "sdpa"  # causal masking with attention_mask=None
        if self.config.model_type not in ("llama", "mistral"):
            raise VerifyError(
                f"{model_dir}: --verify streams LLaMA-architecture models, not {self.config.model_type!r}."
            )
        self.ckpt = open_checkpoint(self.model_dir)

    def layer(self, get, i: int):
        """Decoder layer i with its float32 weights from the checkpoint reader `get` (``self.ckpt.reader()``)."""
        import torch
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        prefix = f"model.layers.{i}."
        with torch.device("meta"):
            layer = LlamaDecoderLayer(self.config, i)
        state = {
            k[len(prefix) :]: get(k).float()
            for k in self.ckpt.tensors
            if k.startswith(prefix) and not k.endswith("rotary_emb.inv_freq")
        }
        layer.load_state_dict(state, assign=True, strict=True)
        return layer

    def logits(self, ids, progress: Progress = NULL):
        """ids: int64 [B, T] (right-padded sequences are fine: causal attention) -> logits float32 [B, T, V]."""
        import torch
        from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

        cfg, n_layers = self.config, self.config.num_hidden_layers
        positions = torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1)
        with (
            torch.inference_mode(),
            self.ckpt.reader() as get,
            progress.task("verify", total=n_layers + 2, unit="layer") as advance,
        ):
            embed = get("model.embed_tokens.weight").float()
            h = torch.nn.functional.embedding(ids, embed)  # [B, T, d]
            if "lm_head.weight" in self.ckpt.tensors:
                del embed
            advance()
            rope = LlamaRotaryEmbedding(cfg)
            position_embeddings = rope(h, positions)
            for i in range(n_layers):
                layer = self.layer(get, i)
                h = layer(h, attention_mask=None, position_ids=positions, position_embeddings=position_embeddings)
                del layer
                advance()
            norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
            norm.weight.data = get("model.norm.weight").float()
            h = norm(h)
            head = get("lm_head.weight").float() if "lm_head.weight" in self.ckpt.tensors else embed
            out = h @ head.T  # [B, T, V]
            advance()
        return out


def perplexity_of(logits, ids) -> float:
    """exp(mean next-token cross-entropy) of one sequence: logits [T, V], ids [T]."""
    import torch

    loss = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:])
    return math.exp(float(loss))


def verify_model(
    model_dir: Path, max_ppl: float | None, new_tokens: int, chat_format: str, progress: Progress = NULL
) -> dict[str, Any]:
    """Score VERIFY_TEXT and greedily continue a chat prompt; raise VerifyError if perplexity exceeds max_ppl
    (None: perplexity_limit of the model's size)."""
    import torch
    from transformers import AutoTokenizer

    from .chat import prompt_ids, resolve_format

    stream = LayerStream(model_dir)
    if max_ppl is None:
        max_ppl = perplexity_limit(sum(t.numel for t in stream.ckpt.tensors.values()))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = torch.tensor(tokenizer(VERIFY_TEXT).input_ids)
    prompt = prompt_ids(tokenizer, [{"role": "user", "content": VERIFY_PROMPT}], resolve_format(chat_format, tokenizer))
    # One pass scores the text and yields the first generated token: both sequences in one right-padded batch.
    width = max(len(text), len(prompt))
    batch = torch.zeros(2, width, dtype=torch.long)
    batch[0, : len(text)], batch[1, : len(prompt)] = text, torch.tensor(prompt)
    logits = stream.logits(batch, progress)
    ppl = perplexity_of(logits[0, : len(text)], text)
    generated = [int(logits[1, len(prompt) - 1].argmax())]
    for _ in range(new_tokens - 1):  # each further token is one more streamed pass (no model in RAM, no KV cache)
        if generated[-1] == tokenizer.eos_token_id:
            break
        generated.append(int(stream.logits(torch.tensor([prompt + generated]), progress)[0, -1].argmax()))
    sample = tokenizer.decode(generated[:new_tokens], skip_special_tokens=True)
    result = {
        "perplexity": ppl,
        "tokens_scored": len(text) - 1,
        "max_perplexity": max_ppl,
        "prompt": VERIFY_PROMPT,
        "sample": sample,
    }
    log.info(
        "verify: perplexity %.2f over %d tokens (limit %.0f); %r -> %r",
        ppl,
        len(text) - 1,
        max_ppl,
        VERIFY_PROMPT,
        sample,
    )
    if not ppl <= max_ppl:
        raise VerifyError(
            f"{model_dir}: the recovered model scores perplexity {ppl:.0f} on plain English text (a working "
            f"model scores under {max_ppl:.0f}); the base was probably converted by another script or is "
            "not the model the diff was made from (or pass --skip-check verify)."
        )
    return result
