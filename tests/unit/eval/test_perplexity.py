import math
from pathlib import Path

import numpy as np
import pytest
from unit.eval.eval_fakes import FakeBackend

from tulu_quant.eval import perplexity as P


def test_windows_with_and_without_bos():
    ids = list(range(10, 30))  # 20 text tokens
    with_bos = P.make_windows(ids, 8, bos_id=1)
    assert with_bos.inputs[0] == [1, 10, 11, 12, 13, 14, 15, 16] and len(with_bos.inputs) == 2  # 7 text tokens each
    assert with_bos.scored_per_window == 7
    plain = P.make_windows(ids, 8, bos_id=None, max_windows=1)
    assert plain.inputs == [list(range(10, 18))] and plain.scored_per_window == 7
    assert P.make_windows(ids, 8, None).inputs[1] == list(range(18, 26))  # non-overlapping


def test_uniform_model_has_perplexity_equal_to_the_vocabulary(tokenizer):
    backend = FakeBackend(tokenizer)  # all-zero logits: every token has probability 1/V
    windows = P.make_windows(list(range(3, 3 + 40)), 10, bos_id=0)
    nll = P.score_windows(backend, windows)
    assert P.perplexity(nll.sum() * windows.scored_per_window, len(nll) * windows.scored_per_window) == pytest.approx(
        len(tokenizer)
    )


def test_token_nll_by_hand():
    # vocab 3; logits [0, ln 3, 0] -> p = [1/5, 3/5, 1/5]; targets 1 then 2
    logits = np.array([[0.0, math.log(3), 0.0], [0.0, math.log(3), 0.0], [0, 0, 0]], dtype=np.float32)
    nll = P.token_nll(logits, [0, 1, 2])
    assert nll == pytest.approx([-math.log(3 / 5), -math.log(1 / 5)], rel=1e-6)


def test_kl_by_hand_and_of_identical_models(tmp_path, tokenizer):
    p = np.log(np.array([[0.5, 0.5]]))
    q_logits = np.log(np.array([[0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert P.kl_per_token(p, q_logits)[0] == pytest.approx(expected, rel=1e-5)

    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(tokenizer), len(tokenizer))).astype(np.float32) * 3

    def fn(prefix):
        return table[prefix[-1]]

    windows = P.make_windows(list(rng.integers(3, len(tokenizer), 60)), 16, bos_id=0)
    reference = FakeBackend(tokenizer, fn)
    P.save_reference(reference, windows, tmp_path / "ref")
    same = P.compare_to_reference(FakeBackend(tokenizer, fn), windows, tmp_path / "ref")
    assert same["kl_mean"] == pytest.approx(0.0, abs=2e-3)  # float16 storage of the reference log-probs
    assert same["top1_agreement"] == 100.0 and same["ppl_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert same["tokens"] == len(windows.inputs) * windows.scored_per_window

    uniform = P.compare_to_reference(FakeBackend(tokenizer), windows, tmp_path / "ref")
    # KL(P || uniform) = log V - H(P), averaged over the scored positions
    logp = np.stack([P.log_softmax(table[w[t]][None])[0] for w in windows.inputs for t in range(len(w) - 1)])
    expected_kl = np.mean(math.log(len(tokenizer)) + (np.exp(logp) * logp).sum(-1))
    assert uniform["kl_mean"] == pytest.approx(expected_kl, rel=2e-3)
    assert uniform["kl_p99"] >= uniform["kl_median"]
    ref_nll = np.concatenate([P.token_nll(reference.logits(w), w) for w in windows.inputs])
    assert uniform["ppl_ratio"] == pytest.approx(math.exp(math.log(len(tokenizer)) - ref_nll.mean()), rel=1e-6)


def test_a_server_backend_scores_windows_from_its_token_logprobs(tokenizer):
    """A backend with token_logprobs (vLLM: the prompt's own tokens' log-probabilities, no logits) gives the same
    per-window NLL as the logits of the same model, in batches of its server_batch."""

    def logit_fn(prefix):
        return np.linspace(0.0, 1.0 + len(prefix) % 3, len(tokenizer)).astype(np.float32)

    native = FakeBackend(tokenizer, logit_fn)

    class Server:
        tokenizer, path, server_batch, batches = native.tokenizer, None, 2, []

        def token_logprobs(self, seqs):
            self.batches.append(len(seqs))
            return [list(-P.token_nll(native.logits(ids), ids)) for ids in seqs]

    ids = tokenizer("the quick brown fox jumps over the lazy dog " * 8, add_special_tokens=False).input_ids
    windows = P.make_windows(ids, 16, None)
    server = Server()
    assert np.allclose(P.score_windows(server, windows, batch_size="auto"), P.score_windows(native, windows))
    assert server.batches == [2] * (len(windows.inputs) // 2) + [1] * (len(windows.inputs) % 2)


def test_the_perplexity_pass_saves_the_kl_windows_and_kl_scores_none_of_them_again(tmp_path, tokenizer):
    from types import SimpleNamespace

    from tulu_quant.eval import suite as S

    rng = np.random.default_rng(1)
    table = rng.normal(size=(len(tokenizer), len(tokenizer))).astype(np.float32) * 3
    noisy = table + rng.normal(size=table.shape).astype(np.float32)
    windows = P.make_windows(list(rng.integers(3, len(tokenizer), 80)), 16, bos_id=0)  # 5 windows
    kl_windows = P.Windows(windows.inputs[:2], windows.bos, windows.total_tokens)
    suite, kl, noop = SimpleNamespace(batch_size=1, bootstrap_samples=10, seed=0), (2, "tag"), lambda n=1, **_: None
    ref, cand = FakeBackend(tokenizer, lambda p: table[p[-1]]), FakeBackend(tokenizer, lambda p: noisy[p[-1]])
    ref_dir, cand_dir = tmp_path / "ref-0123", tmp_path / "cand-4567"

    ref_ppl = S._perplexity("ppl.x", "x", windows, suite, kl, ref, "reference", None, ref_dir, noop)
    assert ref.calls["logits"] == 5
    ref_kl = S._kl(kl_windows, "tag", suite, ref, "reference", None, ref_dir, noop)
    assert ref.calls["logits"] == 5 and ref_kl.files == ref_ppl.files  # the KL job scored nothing again

    S._perplexity("ppl.x", "x", windows, suite, kl, cand, "candidate", ref_ppl, cand_dir, noop)
    fused = S._kl(kl_windows, "tag", suite, cand, "candidate", ref_kl, cand_dir, noop)
    assert cand.calls["logits"] == 5
    alone = P.compare_to_reference(FakeBackend(tokenizer, lambda p: noisy[p[-1]]), kl_windows, Path(ref_kl.files[0]))
    metrics = {m.key: m.value for m in fused.metrics}
    assert metrics["kl_mean"] == pytest.approx(alone["kl_mean"]) and alone["kl_mean"] > 0.1
    assert metrics["top1_agreement"] == pytest.approx(alone["top1_agreement"])

    # the KL job alone (a run whose perplexity pass could not save windows) scores what is missing, the same
    again = S._kl(
        kl_windows,
        "tag",
        suite,
        FakeBackend(tokenizer, lambda p: noisy[p[-1]]),
        "candidate",
        ref_kl,
        tmp_path / "other-89ab",
        noop,
    )
    assert {m.key: m.value for m in again.metrics}["kl_mean"] == pytest.approx(alone["kl_mean"])
