"""Perplexity and KL divergence against the reference, on the same tokens.

Protocol (the standard one, as for WikiText-2): the evaluation documents are joined with blank lines, tokenized once
without special tokens, and cut into non-overlapping windows of the context length L. When the tokenizer starts
sequences with BOS, each window is [BOS] + L-1 text tokens and all L-1 text tokens are scored; otherwise a window is L
text tokens and the L-1 after the first are scored. The perplexity is exp(total NLL / tokens scored).

KL statistics follow llama.cpp's --kl-divergence: per scored token KL(P_ref || P_cand) of the next-token distributions,
its mean, median, 99th percentile and maximum, the share of tokens whose argmax agrees (top-1 agreement) and the
perplexity ratio on those tokens. The reference's log-probabilities are saved per window (float16; the argmax and the
target NLL exactly) so candidates are compared without holding two models in memory.

One pass serves both: the KL windows are the first windows of the first perplexity source, so the perplexity pass
hands each of those windows' logits to a ``WindowSink`` that saves the reference's window (``save_window``) or a
candidate's comparison with it (``save_comparison``); the KL job then scores only the windows no earlier pass left,
and the two models' logits are computed once per window instead of twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOCUMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Windows:
    inputs: list[list[int]]  # token ids fed to the model, one list per window
    bos: bool
    total_tokens: int  # text tokens available before windowing

    @property
    def scored_per_window(self) -> int:
        return len(self.inputs[0]) - 1 if self.inputs else 0


# ------------------------------------------------------------------------------------------------------ pure math


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of [T, V] logits, in float32 (max-subtracted, so stable)."""
    x = logits.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """NLL (nats, float64) of ids[1:] under logits[:-1] (logits[t] predicts ids[t + 1]).

    With BOS at position 0 these targets are every text token of the window; without BOS the first text token has no
    context and is not scored.
    """
    logp = log_softmax(logits[:-1])
    targets = np.asarray(ids[1:])
    return -logp[np.arange(len(targets)), targets].astype(np.float64)


def perplexity(nll_sum: float, tokens: int) -> float:
    return float(np.exp(nll_sum / tokens)) if tokens else float("nan")


def kl_per_token(ref_logp: np.ndarray, cand_logits: np.ndarray) -> np.ndarray:
    """KL(P_ref || P_cand) per row: sum_v p_ref (log p_ref - log p_cand), float64, clipped at 0 (rounding)."""
    ref = ref_logp.astype(np.float32)
    cand = log_softmax(cand_logits)
    kl = (np.exp(ref) * (ref - cand)).sum(axis=-1, dtype=np.float64)
    return np.maximum(kl, 0.0)


def make_windows(ids: list[int], length: int, bos_id: int | None, max_windows: int | None = None) -> Windows:
    """Non-overlapping windows of `length` model inputs over the token stream (BOS first when bos_id is given)."""
    if length < 2:
        raise ValueError(f"perplexity windows need at least 2 tokens, got context length {length}")
    text_len = length - 1 if bos_id is not None else length
    count = len(ids) // text_len
    if max_windows is not None:
        count = min(count, max_windows)
    prefix = [bos_id] if bos_id is not None else []
    inputs = [prefix + list(ids[i * text_len : (i + 1) * text_len]) for i in range(count)]
    return Windows(inputs, bos_id is not None, len(ids))


def kl_summary(kl: np.ndarray, agree: np.ndarray, ref_nll: np.ndarray, cand_nll: np.ndarray) -> dict[str, float]:
    """llama.cpp-style statistics over all scored tokens of the KL windows."""
    n = len(kl)
    return {
        "kl_mean": float(kl.mean()),
        "kl_mean_stderr": float(kl.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "kl_median": float(np.median(kl)),
        "kl_p99": float(np.percentile(kl, 99)),
        "kl_max": float(kl.max()),
        "top1_agreement": float(100.0 * agree.mean()),
        "ppl_ratio": float(np.exp(cand_nll.mean() - ref_nll.mean())),
        "tokens": int(n),
    }


# ------------------------------------------------------------------------------------------------------ with a backend


def bos_id_of(tokenizer) -> int | None:
    """The BOS id when the tokenizer puts one at the start of encoded text (LLaMA does, SmolLM2 does not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    probe = tokenizer("a").input_ids
    return bos if probe and probe[0] == bos else None


def tokenize_documents(tokenizer, documents: list[str]) -> list[int]:
    return tokenizer(DOCUMENT_SEPARATOR.join(documents), add_special_tokens=False).input_ids


def logits_of_windows(
    backend, windows: Windows, batch_size: int | str, advance: Callable[..., None], skip=lambda index: False
):
    """(index, ids, logits) of each window not skipped, scored batch_size windows per forward pass ("auto": as many
    as fit, tulu_quant.eval.decode.resolve_batch_size)."""
    from .decode import resolve_batch_size

    todo = []
    for index in range(len(windows.inputs)):
        if skip(index):
            advance(1)
        else:
            todo.append(index)
    if not todo:
        return
    size = resolve_batch_size(backend, batch_size, len(windows.inputs[0]), full_logits=True, scoring=True)
    for start in range(0, len(todo), size):
        batch = todo[start : start + size]
        for index, logits in zip(batch, backend.logits_batch([windows.inputs[i] for i in batch])):
            yield index, windows.inputs[index], logits
        advance(len(batch))


WindowSink = Callable[[int, list[int], np.ndarray], None]  # (window index, ids, logits) of a window just scored


def score_windows(
    backend,
    windows: Windows,
    advance: Callable[..., None] = lambda n=1, **_: None,
    batch_size: int | str = 1,
    sink: WindowSink | None = None,
) -> np.ndarray:
    """Per-window mean NLL (float64 [windows]) of the backend over the windows; each window's logits also go to
    ``sink`` when given. A server backend (one with ``token_logprobs``: vLLM) returns the log-probability of each
    window's own tokens instead of logits: the same targets as token_nll (ids[1:]), and nothing for the sink."""
    if hasattr(backend, "token_logprobs"):
        from .decode import resolve_batch_size

        size = resolve_batch_size(backend, batch_size, len(windows.inputs[0]), scoring=True) if windows.inputs else 1
        out = []
        for start in range(0, len(windows.inputs), size):
            batch = windows.inputs[start : start + size]
            out += [-float(np.mean(np.asarray(lp, dtype=np.float64))) for lp in backend.token_logprobs(batch)]
            advance(len(batch))
        return np.asarray(out)
    out = []
    for index, ids, logits in logits_of_windows(backend, windows, batch_size, advance):
        out.append(float(token_nll(logits, ids).mean()))
        if sink is not None:
            sink(index, ids, logits)
    return np.asarray(out)


def _window_file(folder: Path, index: int) -> Path:
    return folder / f"window-{index:04d}.npz"


def _save_npz(folder: Path, index: int, **arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".window-{index:04d}.partial.npz"
    np.savez(partial, **arrays)
    partial.rename(_window_file(folder, index))


def save_window(folder: Path, index: int, ids: list[int], logits: np.ndarray) -> None:
    """The reference's record of one window: log-probabilities (float16), argmax and target NLL."""
    logp = log_softmax(logits[:-1])
    _save_npz(
        folder,
        index,
        logp=logp.astype(np.float16),
        argmax=logp.argmax(axis=-1).astype(np.int32),
        nll=token_nll(logits, ids),
    )


def comparison(reference: Path, index: int, ids: list[int], logits: np.ndarray) -> dict[str, np.ndarray]:
    """A candidate's per-token comparison of one window with the reference's saved window: KL, argmax agreement,
    both NLLs (what kl_summary summarizes)."""
    saved = np.load(_window_file(reference, index))
    return {
        "kl": kl_per_token(saved["logp"], logits[:-1]),
        "agree": logits[:-1].argmax(axis=-1) == saved["argmax"],
        "ref_nll": saved["nll"],
        "cand_nll": token_nll(logits, ids),
    }


def save_comparison(folder: Path, reference: Path, index: int, ids: list[int], logits: np.ndarray) -> None:
    _save_npz(folder, index, **comparison(reference, index, ids, logits))


def save_reference(
    backend,
    windows: Windows,
    folder: Path,
    advance: Callable[..., None] = lambda n=1, **_: None,
    batch_size: int | str = 1,
) -> None:
    """Write, per window, the reference's log-probabilities (float16), argmax and target NLL for later KL scoring;
    windows already saved (by the perplexity pass, or a run that was stopped) are kept."""
    skip = lambda index: _window_file(folder, index).is_file()  # noqa: E731
    for index, ids, logits in logits_of_windows(backend, windows, batch_size, advance, skip):
        save_window(folder, index, ids, logits)


def compare_to_reference(
    backend,
    windows: Windows,
    folder: Path,
    advance: Callable[..., None] = lambda n=1, **_: None,
    batch_size: int | str = 1,
    compared: Path | None = None,
) -> dict[str, float]:
    """KL statistics of the backend against the saved reference windows. With ``compared`` (the folder where the
    perplexity pass saved this candidate's comparisons), only the windows missing there are scored, and saved there."""
    if compared is None:
        rows = [
            comparison(folder, index, ids, logits)
            for index, ids, logits in logits_of_windows(backend, windows, batch_size, advance)
        ]
    else:
        skip = lambda index: _window_file(compared, index).is_file()  # noqa: E731
        for index, ids, logits in logits_of_windows(backend, windows, batch_size, advance, skip):
            save_comparison(compared, folder, index, ids, logits)
        rows = [dict(np.load(_window_file(compared, index))) for index in range(len(windows.inputs))]
    return kl_summary(*(np.concatenate([row[k] for row in rows]) for k in ("kl", "agree", "ref_nll", "cand_nll")))
