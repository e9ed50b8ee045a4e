import sys
import time

import pytest

from tulu_quant.data import DataUnavailable, get_source, hub


@pytest.fixture
def no_hub(monkeypatch):
    """A Hub endpoint that refuses connections at once (nothing here may reach the real Hub)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def test_unreachable_hub_is_a_fast_clear_error(no_hub):
    started = time.monotonic()
    with pytest.raises(
        DataUnavailable,
        match=r"data source 'wikitext2' comes from the Hugging Face Hub, and "
        r"127\.0\.0\.1:9 is not reachable .*file:PATH",
    ):
        get_source("wikitext2").documents("evaluation")
    with pytest.raises(DataUnavailable, match="data source 'tulu-sft'"):
        get_source("tulu-sft").conversations("calibration", limit=8)
    assert time.monotonic() - started < 10
    assert isinstance(DataUnavailable("x"), RuntimeError)


def test_missing_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no probe: the import is what fails
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataUnavailable, match=r"data source 'c4' needs the `datasets` package.*tulu-quant\[hub\]"):
        get_source("c4").documents("calibration")


def test_offline_mode_skips_the_probe(no_hub, monkeypatch):
    assert hub.hub_unreachable().startswith("127.0.0.1:9 is not reachable")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # then only the local `datasets` cache is used
    assert hub.hub_unreachable() is None


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the one call into `datasets` by in-memory rows; record what was asked for."""
    calls = []
    tables = {
        "Salesforce/wikitext": lambda split: [{"text": f"{split} line {i}"} for i in range(3)],
        "allenai/c4": lambda split: [{"text": f"doc {i}", "url": "u"} for i in range(5)],
        "allenai/tulu-v1-sft-mixture": lambda split: [
            {
                "dataset": "d",
                "id": str(i),
                "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            }
            for i in range(6)
        ],
        "openai/gsm8k": lambda split: [{"question": f"{split} q", "answer": "#### 1"}],
        "google-research-datasets/tydiqa": lambda split: [
            {
                "id": "english-123-0",
                "title": "t",
                "context": "c",
                "question": "q",
                "answers": {"text": ["a"], "answer_start": [0]},
            }
        ],
    }

    def load_dataset(what, hint, path, *args, split=None, **kwargs):
        calls.append((path, args, split, kwargs))
        return tables[path](split)

    for fn in (hub._wikitext, hub._c4, hub._tulu_sft):
        fn.cache_clear()
    monkeypatch.setattr(hub, "load_dataset", load_dataset)
    yield calls
    for fn in (hub._wikitext, hub._c4, hub._tulu_sft):
        fn.cache_clear()


def test_hub_rows_become_documents_and_splits(fake_hub):
    assert get_source("wikitext2").documents("calibration") == ["train line 0", "train line 1", "train line 2"]
    assert get_source("wikitext2").documents("evaluation")[0] == "test line 0"
    assert [c[2] for c in fake_hub] == ["train", "test"] and fake_hub[0][1] == ("wikitext-2-raw-v1",)
    assert get_source("c4").documents("calibration") == ["doc 0", "doc 2", "doc 4"]
    assert get_source("c4").documents("evaluation") == ["doc 1", "doc 3"]
    assert fake_hub[-1][3] == {"data_files": {"validation": hub.C4[1]}}
    sft = get_source("tulu-sft")
    assert sft.conversations("evaluation", limit=2) == [
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
        [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}],
    ]
    assert fake_hub[-1][3] == {"streaming": True}
    assert len(sft.conversations("calibration")) == 3 and fake_hub[-1][3] == {"streaming": False}
    assert get_source("c4").describe(["evaluation"])["sizes"]["evaluation"]["documents"] == 2

    assert hub.gsm8k_test("h") == [{"question": "test q", "answer": "#### 1"}]
    assert hub.tydiqa("h")["test"] == [{"lang": "english", "context": "c", "question": "q", "answers": ["a"]}]
    assert fake_hub[-1][:3] == ("google-research-datasets/tydiqa", ("secondary_task",), "train")
