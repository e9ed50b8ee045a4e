import json

import pytest

from tulu_quant.data import SOURCES, SourceError, check_disjoint, get_source, materials


def test_registry_lists_sources_and_refuses_unknown_names():
    assert {"wiki", "shakespeare", "instructions", "mmlu", "humaneval", "wikitext2", "tulu-sft", "c4"} <= set(SOURCES)
    with pytest.raises(SourceError, match=r"unknown data source 'wikipedia'.*'wiki'.*'shakespeare'.*file:PATH"):
        get_source("wikipedia")
    source = get_source("wiki")
    assert (source.kind, source.splits) == ("text", ("calibration", "evaluation"))
    assert get_source("tulu-sft").kind == get_source("instructions").kind == "chat"
    with pytest.raises(SourceError, match=r"'wiki' has no split 'test'.*\['calibration', 'evaluation'\]"):
        source.documents("test")
    with pytest.raises(SourceError, match="'humaneval' has no split 'calibration'"):
        get_source("humaneval").conversations("calibration")


def test_kind_mismatch_is_an_error(offline_files):
    with pytest.raises(SourceError, match="chat source; call conversations"):
        get_source("instructions").documents("calibration")
    with pytest.raises(SourceError, match="text source; call documents"):
        get_source("wiki").conversations("calibration")


def test_describe_reports_provenance_and_sizes(offline_files):
    info = get_source("wiki").describe()
    assert info["package"] == "gensim==4.4.0" and len(info["sha256"]) == 64 and "split_rule" in info
    cal, ev = info["sizes"]["calibration"], info["sizes"]["evaluation"]
    assert cal["documents"] + ev["documents"] > 100 and cal["sha256"] != ev["sha256"]
    assert cal["characters"] == sum(map(len, get_source("wiki").documents("calibration")))
    assert get_source("wikitext2").describe()["sizes"] == {}  # remote: nothing downloaded to describe it
    json.dumps(get_source("shakespeare").describe())  # report-ready


def test_local_txt_and_jsonl_sources(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("One document.\n\nWith two paragraphs.\n")
    source = get_source(f"file:{txt}")
    assert source.kind == "text" and source.documents("calibration") == [txt.read_text()]
    assert source.documents("evaluation") == source.documents("all")
    assert source.describe()["sizes"]["all"]["documents"] == 1

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "first", "id": 1}) + "\n\n" + json.dumps({"text": "second"}) + "\n")
    assert get_source(f"file:{rows}").documents("all") == ["first", "second"]
    assert get_source(f"file:{rows}").documents("all", limit=1) == ["first"]

    chat = tmp_path / "chat.jsonl"
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    chat.write_text(json.dumps({"messages": conversation, "source": "x"}) + "\n")
    source = get_source(f"file:{chat}")
    assert source.kind == "chat" and source.conversations("calibration") == [conversation]


def test_local_file_errors(tmp_path, monkeypatch):
    missing = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError, match="absent.jsonl does not exist"):
        get_source(f"file:{missing}")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match=r"unsupported file type '\.csv'"):
        get_source(f"file:{tmp_path / 'data.csv'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + "{not json\n")
    with pytest.raises(SourceError, match=r"bad.jsonl:2: not valid JSON"):
        get_source(f"file:{bad}").documents("all")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n" + json.dumps({"text": "b"}) + "\n"
    )
    with pytest.raises(SourceError, match=r"mixed.jsonl:2: the row has no \['messages'\]"):
        get_source(f"file:{mixed}").conversations("all")
    roles = tmp_path / "roles.jsonl"
    roles.write_text(json.dumps({"messages": [{"role": "bot", "content": "a"}]}) + "\n")
    with pytest.raises(SourceError, match="row 1: 'messages' must be"):
        get_source(f"file:{roles}").conversations("all")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel.txt").write_text("relative")
    assert get_source("file:rel.txt").documents("all") == ["relative"]


def test_check_disjoint_rules(tmp_path):
    check_disjoint(
        [("wiki", "calibration"), ("shakespeare", "calibration"), ("instructions", "calibration")],
        [
            ("wiki", "evaluation"),
            ("shakespeare", "evaluation"),
            ("mmlu", "evaluation"),
            ("gsm8k", "evaluation"),
            ("humaneval", "evaluation"),
            ("wikitext2", "evaluation"),
        ],
    )
    with pytest.raises(
        ValueError, match=r"calibration source wiki \(split evaluation\) overlaps evaluation source wiki"
    ):
        check_disjoint([("wiki", "evaluation")], [("wiki", "evaluation")])
    # derived material: instructions is built from the wiki, plays and MMLU of the same split
    with pytest.raises(ValueError, match=r"instructions \(split calibration\) overlaps .* wiki \(split calibration\)"):
        check_disjoint([("instructions", "calibration")], [("wiki", "calibration")])
    with pytest.raises(ValueError, match="overlaps evaluation source instructions"):
        check_disjoint([("mmlu", "evaluation")], [("instructions", "evaluation")])
    with pytest.raises(ValueError, match="both contain humaneval"):
        check_disjoint([("instructions", "evaluation")], [("humaneval", "evaluation")])
    with pytest.raises(ValueError, match="has no split"):
        check_disjoint([("wiki", "train")], [])
    with pytest.raises(ValueError, match="only has the split 'evaluation'"):
        check_disjoint([("gsm8k", "calibration")], [])
    # a local file is one piece of material, whatever split is named
    path = tmp_path / "corpus.txt"
    path.write_text("text")
    other = tmp_path / "other.txt"
    other.write_text("more")
    check_disjoint([(f"file:{path}", "calibration")], [(f"file:{other}", "evaluation")])
    with pytest.raises(ValueError, match="corpus.txt"):
        check_disjoint(
            [(f"file:{path}", "calibration")], [(f"file:{tmp_path}/../{tmp_path.name}/corpus.txt", "evaluation")]
        )
    assert materials("instructions", "calibration") == {
        "enwiki-dump:calibration",
        "shakespeare:calibration",
        "mmlu:calibration",
    }
