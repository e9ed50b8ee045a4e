"""Helpers of the eval tests: a tokenizer trained on the spot, a backend whose logits and answers the test controls.

Import as `from unit.eval.eval_fakes import ...` (pytest runs with --import-mode=importlib, pythonpath tests)."""

from __future__ import annotations

import numpy as np

from tulu_quant.backends import collect
from tulu_quant.config import GenerationSettings

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Question: what is 2 + 2? Answer: 4",
    "A. B. C. D. The answer is: A B C D\n\n<|user|>\n<|assistant|>\n def return print",
]


def train_tokenizer(vocab_size: int = 300, bos: bool = True):
    """A byte-level BPE tokenizer (BOS-prefixing like LLaMA's when bos=True); no download needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


class FakeBackend:
    """A Backend whose next-token logits come from a function of the prefix and whose generations are scripted.

    logit_fn(prefix_ids) -> [vocab] logits for the token after prefix_ids. answers: prompt substring -> reply text
    (the first key found in the decoded prompt wins; '' matches everything).
    """

    kind, path = "fake", None  # path: the folder (none: no generation_config.json stop ids)

    def __init__(self, tokenizer, logit_fn=None, answers=None, context_length: int = 4096):
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer)
        self.logit_fn = logit_fn or (lambda prefix: np.zeros(self.vocab, dtype=np.float32))
        self.answers = answers or {}
        self.context_length = context_length
        self.calls = {"logits": 0, "generate": 0}
        self.prompts: list[list[int]] = []  # the ids of every generation's prompt
        self.batches: list[int] = []  # the size of every generate_batch call

    def logits(self, ids):
        self.calls["logits"] += 1
        return np.stack([self.logit_fn(ids[: t + 1]) for t in range(len(ids))]).astype(np.float32)

    def logits_batch(self, seqs, last_only=False):
        rows = [self.logits(ids) for ids in seqs]
        return np.stack([r[-1] for r in rows]) if last_only else rows

    def generate_batch(self, prompts, settings, on_tokens=None, stop_ids=()):
        self.batches.append(len(prompts))
        on_tokens = on_tokens or [None] * len(prompts)
        return [self.generate(ids, settings, on, stop_ids) for ids, on in zip(prompts, on_tokens)]

    def generate(self, ids, settings=None, on_token=None, stop_ids=()):
        settings = settings or GenerationSettings()
        self.calls["generate"] += 1
        self.prompts.append(list(ids))
        prompt = self.tokenizer.decode(ids)
        reply = next((text for key, text in self.answers.items() if key in prompt), "")
        tokens = self.tokenizer.encode(reply, add_special_tokens=False)[: settings.max_new_tokens]
        return collect(tokens, on_token, stop_ids)

    def size_bytes(self):
        return 0

    def describe(self):
        return {"kind": self.kind}
