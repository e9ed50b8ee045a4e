"""Fixtures of the eval tests."""

import pytest
from unit.eval.eval_fakes import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()
