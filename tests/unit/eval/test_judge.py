import random
import re

import pytest
from fake_http import json_endpoint

from tulu_quant.eval import judge
from tulu_quant.fetch import fetch

UNREADABLE = "UNREADABLE"


def rank(body: dict) -> dict:
    """Ranks the answer containing 'GOOD' first, and replies nonsense when an answer says UNREADABLE."""
    answers = re.findall(r'"answer": """(.*?)"""', body["messages"][-1]["content"], re.S)
    first = 1 if "GOOD" in answers[0] else 2
    reply = f"[{{'model': 'model_1', 'rank': {first}}}, {{'model': 'model_2', 'rank': {3 - first}}}]"
    if any(UNREADABLE in a for a in answers):
        reply = "Both are fine."
    return {"choices": [{"message": {"role": "assistant", "content": reply}}]}


@pytest.fixture
def fake_judge():
    """An OpenAI-compatible chat endpoint that reads alpaca_eval's ranking prompt (rank above)."""
    with json_endpoint(rank) as endpoint:
        yield endpoint


def test_annotator_prompt_is_alpaca_evals_own_file():
    template = fetch(judge.ANNOTATOR_PROMPT).read_text(encoding="utf-8")
    messages = judge.to_messages(judge.render(template, "Say hi.", "Hello!", "Hi there."))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "ranks models by the quality of their answers" in messages[0]["content"]
    user = messages[1]["content"]
    assert '"instruction": """Say hi.""",' in user
    assert user.index('"answer": """Hello!"""') < user.index('"answer": """Hi there."""')
    assert "{'model': <model-name>, 'rank': <model-rank>}" in user  # literal braces left alone


def test_render_fills_each_placeholder_once_in_alpaca_evals_order():
    template = "I={instruction} A={output_1} B={output_2} again {output_1}"
    assert judge.render(template, "say {output_1}", "x", "y") == "I=say x A={output_1} B=y again {output_1}"


def test_parse_preference():
    assert judge.parse_preference("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]") == 1
    assert judge.parse_preference(" [{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]\n") == 2
    assert judge.parse_preference("[{'model': 'model_1', 'rank': 3}]") is None
    assert judge.parse_preference("model_1 is better") is None
    assert judge.parse_preference("[{'name': 'model_1'}]") is None


def test_switch_is_alpaca_evals_seeded_choice():
    instructions = [f"instruction {i}" for i in range(400)]
    switched = [judge.is_switched(i) for i in instructions]
    assert switched == [random.Random(f"is_switched_outputs{i}123").choices([False, True])[0] for i in instructions]
    assert 150 < sum(switched) < 250


def test_win_rate_against_a_local_judge(fake_judge, monkeypatch):
    url, seen = fake_judge
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret")
    instructions = [f"task {i}" for i in range(9)]
    answers = ["GOOD answer"] * 4 + ["bad answer"] * 3 + ["same", f"{UNREADABLE} answer"]
    references = ["bad answer"] * 4 + ["GOOD answer"] * 3 + ["same", "other"]
    scores = judge.win_scores(instructions, answers, references, url, "judge-1", "TEST_JUDGE_KEY", 10)
    # whichever side each pair was shown on; identical answers tie without asking; an unreadable verdict is None
    assert scores == [1.0] * 4 + [0.0] * 3 + [0.5, None]
    assert len(seen) == 8 and seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["auth"] == "Bearer secret"
    body = seen[0]["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0 and body["max_tokens"] == 100
    asked = [i for i in range(9) if i != 7]  # the identical pair was not sent
    for i, request in zip(asked, seen):
        shown = re.findall(r'"answer": """(.*?)"""', request["body"]["messages"][-1]["content"], re.S)
        assert f'"""{instructions[i]}"""' in request["body"]["messages"][-1]["content"]
        assert shown == (
            [answers[i], references[i]] if judge.is_switched(instructions[i]) else [references[i], answers[i]]
        )


def test_unreachable_judge_is_one_clear_error():
    with pytest.raises(judge.JudgeError, match="127.0.0.1:9"):
        judge.ask("http://127.0.0.1:9/v1", "m", [{"role": "user", "content": "hi"}], None, 2)
