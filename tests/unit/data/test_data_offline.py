import re
import string

import pytest

from tulu_quant.data import get_source, load_humaneval, load_mmlu, offline


@pytest.fixture(scope="module")
def fresh(offline_files):
    """Parse everything twice from the cached files (caches cleared in between): the splits must not change."""
    first = {
        split: (get_source("wiki").documents(split), get_source("shakespeare").documents(split))
        for split in ("calibration", "evaluation")
    }
    offline.wiki_articles.cache_clear()
    offline.plays.cache_clear()
    return first


def test_wiki_split_rule_and_determinism(fresh):
    articles = offline.wiki_articles()
    assert 100 <= len(articles) <= 110  # about 105 articles after dropping redirects
    calibration, evaluation = (get_source("wiki").documents(s) for s in ("calibration", "evaluation"))
    assert calibration == fresh["calibration"][0] and evaluation == fresh["evaluation"][0]  # re-parsed: same text
    assert len(calibration) == len(articles) // 2 and len(calibration) + len(evaluation) == len(articles)
    titles = [title for title, _ in articles]
    cal_titles = [t for t, _ in offline.wiki_split("calibration")]
    eval_titles = [t for t, _ in offline.wiki_split("evaluation")]
    assert cal_titles + eval_titles == titles  # first half vs second half, in dump order
    assert not set(cal_titles) & set(eval_titles)
    assert not set(calibration) & set(evaluation)
    assert cal_titles[0] == "Anarchism"


def test_wiki_text_is_clean(offline_files):
    text = "\n\n".join(get_source("wiki").documents("calibration") + get_source("wiki").documents("evaluation"))
    assert 2_500_000 < len(text) < 3_500_000  # 3.1 M characters with reference sections kept
    for residue in ("{{", "}}", "[[", "]]", "<ref", "</ref", "'''", "&nbsp;", "&amp;", "thumb|", "<!--"):
        assert residue not in text, residue
    assert not re.search(r"^==.*==$", text, flags=re.M)  # headings lost their '='
    assert "Anarchism is a political philosophy" in text


def test_shakespeare_splits_by_play(fresh):
    cal = [path for path, _ in offline.plays_split("calibration")]
    ev = [path for path, _ in offline.plays_split("evaluation")]
    assert len(cal) == len(ev) == 19 and not set(cal) & set(ev)
    assert sorted(cal + ev) == [path for path, _ in offline.plays()]
    genres = {p.split("/")[0] for p in cal + ev}
    assert genres == {p.split("/")[0] for p in cal} == {p.split("/")[0] for p in ev}  # every genre on both sides
    docs = get_source("shakespeare").documents("evaluation")
    assert docs == fresh["evaluation"][1]
    assert all(not re.search(r"\*\*|^#|\\[\[\-]", d, flags=re.M) for d in docs)
    assert sum(map(len, docs)) > 2_000_000


def test_mmlu(offline_files):
    records = load_mmlu()
    assert len(records) == 14_042
    subjects = {r["subject"] for r in records}
    assert len(subjects) == 57 and "abstract_algebra" in subjects and "moral_scenarios" in subjects
    assert all(r["answer"] in "ABCD" and len(r["answer"]) == 1 for r in records)
    assert all(len(r["choices"]) == 4 and all(isinstance(c, str) for c in r["choices"]) for r in records)
    assert not any(r["question"] == "question" for r in records)  # the two header rows are gone
    pool = get_source("mmlu").conversations("calibration")
    scored = get_source("mmlu").conversations("evaluation")
    assert len(scored) == 14_042 - 57 * offline.MMLU_POOL_PER_SUBJECT  # what validation scores
    assert 57 * offline.MMLU_POOL_PER_SUBJECT - 10 <= len(pool) < 57 * offline.MMLU_POOL_PER_SUBJECT
    assert not {c[0]["content"] for c in pool} & {c[0]["content"] for c in scored}  # MMLU's repeats left out
    first = offline.mmlu_split("calibration")[0]
    assert first == records[0] and pool[0][0]["content"].startswith(first["question"])
    assert (
        pool[0][1]["content"] == f"The answer is {first['answer']}. {first['choices']['ABCD'.index(first['answer'])]}"
    )


def test_humaneval(offline_files):
    problems = load_humaneval()
    assert len(problems) == 164 and len({p["task_id"] for p in problems}) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and problems[0]["entry_point"] == "has_close_elements"
    namespace: dict = {}
    exec(problems[0]["prompt"] + problems[0]["canonical_solution"] + problems[0]["test"], namespace)  # trusted data
    namespace["check"](namespace[problems[0]["entry_point"]])


def test_instructions_are_disjoint_chat(offline_files):
    source = get_source("instructions")
    cal, ev = source.conversations("calibration"), source.conversations("evaluation")
    for conversations in (cal, ev):
        assert all(
            [m["role"] for m in c] == ["user", "assistant"] and all(m["content"] for m in c) for c in conversations
        )
    assert not {repr(c) for c in cal} & {repr(c) for c in ev}
    # calibration answers come from the calibration halves only
    wiki_eval = "\n\n".join(get_source("wiki").documents("evaluation"))
    wiki_answers = [c[1]["content"] for c in cal if c[0]["content"].startswith("Write a paragraph")]
    assert len(wiki_answers) > 500 and not any(a in wiki_eval for a in wiki_answers[:200])
    assert not any("```python" in c[1]["content"] for c in cal)  # HumanEval is never calibration material
    assert sum("```python" in c[1]["content"] for c in ev) == 164
    kinds = [c[0]["content"].split(" ", 1)[0] for c in cal[:3]]
    assert kinds == ["Write", "Continue", cal[2][0]["content"].split(" ", 1)[0]] and cal[2][1]["content"].startswith(
        "The answer is "
    )  # interleaved: wiki, play, MMLU, ...
    assert set(string.ascii_uppercase[:4]) >= {
        c[1]["content"][14] for c in cal if c[1]["content"].startswith("The answer is ")
    }
