import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tulu_quant.eval import judge


@pytest.fixture
def fake_judge():
    """An OpenAI-compatible endpoint on 127.0.0.1 that prefers the output containing 'GOOD'."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            prompt = body["messages"][-1]["content"]
            a = prompt.split("# Output (a)")[1].split("# Output (b)")[0]
            reply = "Output (a)" if "GOOD" in a else "Output (b)"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def test_parse_verdict():
    assert judge.parse_verdict("Output (a)") == "a"
    assert judge.parse_verdict("I prefer output (B).") == "b"
    assert judge.parse_verdict("Output (a) and Output (b) are equal") is None
    assert judge.parse_verdict("neither") is None


def test_win_rate_against_a_local_judge(fake_judge, monkeypatch):
    url, seen = fake_judge
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret")
    instructions = [f"task {i}" for i in range(8)]
    candidate = ["GOOD answer"] * 4 + ["bad answer"] * 3 + ["same"]
    reference = ["bad answer"] * 4 + ["GOOD answer"] * 3 + ["same"]
    scores = judge.win_scores(instructions, candidate, reference, url, "judge-1", "TEST_JUDGE_KEY", 10, seed=0)
    assert scores == [1.0] * 4 + [0.0] * 3 + [0.5]  # whatever order each pair was shown in; identical answers tie
    assert len(seen) == 7 and seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["auth"] == "Bearer secret" and seen[0]["body"]["model"] == "judge-1"


def test_unreachable_judge_is_one_clear_error():
    with pytest.raises(judge.JudgeError, match="127.0.0.1:9"):
        judge.ask("http://127.0.0.1:9/v1", "m", "hi", None, 2)
