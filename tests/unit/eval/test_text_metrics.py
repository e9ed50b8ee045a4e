import pytest

from tulu_quant.eval import text_metrics as tm


def test_exact_match_ignores_case_and_punctuation():
    assert tm.exact_match("(A)", "(a)") == 1.0
    assert tm.exact_match("True.", "true") == 1.0
    assert tm.exact_match("18.0", "18") == 0.0  # punctuation removal makes this "180": as the HF metric does


def test_gsm_answers():
    assert tm.gsm_target("She has 3 + 4 = <<3+4=7>>7.\n#### 1,234") == "1234"
    assert tm.last_number("So 5 apples, then 12 and finally $1,200.") == "1200"
    assert tm.last_number("no digits") == "no digits"
    assert tm.last_number("It is -3.5 degrees") == "-3.5"


def test_bbh_answer_extraction_and_direct_prompt():
    assert tm.bbh_answer("Step one. So the answer is (B). More text.") == "(B)"
    assert tm.bbh_answer("  Yes\n\nQ: next question") == "Yes"
    # only the first paragraph is searched: an answer named after a blank line does not count
    assert tm.bbh_answer("Let me see.\n\nSo the answer is (B).") == "Let me see."
    cot = (
        "Task description.\n\nQ: Is it?\nA: Let's think. It is. So the answer is Yes.\n\n"
        "Q: Or not?\nA: Hmm. So the answer is No."
    )
    assert tm.bbh_direct_prompt(cot) == "Task description.\n\nQ: Is it?\nA: Yes.\n\nQ: Or not?\nA: No."


def test_squad_f1_by_hand():
    # prediction tokens: [eiffel, tower, paris] (article removed); gold [eiffel, tower]: P = 2/3, R = 1, F1 = 0.8
    assert tm.squad_f1("The Eiffel Tower, Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert tm.squad_f1("Berlin", ["Paris", "berlin!"]) == 1.0
    assert tm.squad_f1("nothing", ["Paris"]) == 0.0
    assert tm.squad_f1("", [""]) == 0.0 and tm.squad_f1("The", ["a"]) == 0.0  # SQuAD: nothing shared scores 0


def test_squad_exact_match():
    assert tm.squad_exact("the Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert tm.squad_exact("Eiffel Tower, Paris", ["Eiffel Tower"]) == 0.0
    assert tm.squad_exact("Berlin", ["Paris", "BERLIN"]) == 1.0


def test_rouge_l_by_hand():
    # LCS of "the cat sat on mat" and "the cat is on the mat" is [the, cat, on, mat] = 4: P = 4/5, R = 4/6
    p, r = 4 / 5, 4 / 6
    assert tm.rouge_l("the cat sat on mat", "The cat is on the mat") == pytest.approx(2 * p * r / (p + r))
    assert tm.rouge_l("same words", "same   words") == 1.0
    assert tm.rouge_l("", "") == 1.0 and tm.rouge_l("a", "") == 0.0
