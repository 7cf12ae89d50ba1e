"""Evaluate: a run's base and fine-tuned models side by side, on real tiny models on the CPU.

The demo model learns one fact and the report shows it beating its base on that fact and on
held-out loss; a tiny random Qwen3 run checks the loss counts only response tokens and matches
the trainer's own eval loss; scripted runs (no model) keep the report, the judge and the refusals
fast. lm-eval and the judge's client are optional: their tests skip where they are missing.
"""
from __future__ import annotations

import json
import math
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from studio import FineTuningConfig, run_fine_tuning
from studio.evaluate.report import EvalReport, latest_report
from studio.evaluate.evaluation import (EvalError, EvalRow, Judge, eval_set, evaluate_run, exact_match,
                             export_evalscope, normalise, parse_score, response_loss, rouge_l)
from studio.inference import load_model
from tests.conftest import FACT_A, QA_ROWS, quick_config, write_jsonl

def events_of(run_dir, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


class JudgeStub(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that marks an answer 9 when it holds the reference's
    key word, else 3."""
    key_word = "steps"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        answer = prompt.split("Assistant's answer:")[1].split("Score the")[0]
        score = 9 if self.key_word in answer else 3
        reply = json.dumps({
            "id": "stub", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"Score: {score}\nStub."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


# ---------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def scripted_run(tiny_qwen3, tmp_path_factory):
    """A scripted run (no model trains): its chat answers name the steps it ran."""
    tmp = tmp_path_factory.mktemp("scripted")
    data = write_jsonl(tmp / "qa.jsonl", QA_ROWS)
    run_fine_tuning(data_path=str(data), config=quick_config(
        tiny_qwen3, tmp / "runs" / "scripted", backend="scripted", max_steps=3, val_size=0.25,
        num_samples=0))
    return tmp / "runs" / "scripted"


# ---------------------------------------------------------------------------- the fact
@pytest.mark.slow
def test_the_fine_tuned_demo_model_beats_its_base_on_the_fact_it_learned(fact_run, tmp_path):
    """Exact match and held-out loss both favour the fine-tuned model; the report holds both."""
    seen = []
    report = evaluate_run(fact_run, n_prompts=3, max_new_tokens=24,
                          progress=lambda f, m: seen.append(f))
    base, tuned = report.base, report.tuned
    print(f"\nbase: loss {base.loss:.3f} ppl {base.perplexity:.1f} EM {base.exact_match:.2f} "
          f"ROUGE-L {base.rouge_l:.2f}\ntuned: loss {tuned.loss:.3f} ppl {tuned.perplexity:.2f} "
          f"EM {tuned.exact_match:.2f} ROUGE-L {tuned.rouge_l:.2f}")
    assert [p.reference for p in report.prompts] == [FACT_A] * 3
    assert tuned.exact_match > base.exact_match
    assert tuned.loss < base.loss and tuned.perplexity < base.perplexity
    assert tuned.rouge_l > base.rouge_l
    assert "quillby" in report.prompts[0].tuned.text.lower()
    assert seen == sorted(seen) and seen[-1] == 1.0

    saved = json.loads(report.json_path.read_text())
    for which, scores in (("base", base), ("tuned", tuned)):
        assert saved["models"][which]["loss"] == pytest.approx(scores.loss)
        assert saved["models"][which]["exact_match"] == scores.exact_match
    assert saved["prompts"][0]["reference"] == FACT_A
    page = report.html_path.read_text()
    assert f"{base.loss:.3f}" in page and f"{tuned.loss:.3f}" in page and "Quillby" in page
    assert latest_report(fact_run).folder == report.folder

    path = export_evalscope(fact_run, tmp_path / "qa" / "fact.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert all(set(line) == {"query", "response"} and line["response"] == FACT_A
               for line in lines)


# ---------------------------------------------------------------------------- held-out loss
def test_the_loss_counts_only_response_tokens(tiny_qwen3):
    """response_loss is the token-weighted cross-entropy of the masked tokens, by hand."""
    loaded = load_model(tiny_qwen3)
    ids = list(range(1000, 1020))
    one = [0] * 12 + [1] + [0] * 7            # only token 12 is a response token
    three = [0] * 15 + [1, 1, 1] + [0] * 2
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0].float()
    nll = -torch.log_softmax(logits, -1)
    by_hand = {t: nll[t - 1, ids[t]].item() for t in range(1, 20)}

    assert response_loss(loaded, [(ids, one)]).loss == pytest.approx(by_hand[12], rel=1e-4)
    both = response_loss(loaded, [(ids, one), (ids, three)])
    weighted = (by_hand[12] + by_hand[15] + by_hand[16] + by_hand[17]) / 4
    assert both.tokens == 4
    assert both.loss == pytest.approx(weighted, rel=1e-4)
    assert both.perplexity == pytest.approx(math.exp(weighted), rel=1e-4)


@pytest.mark.slow
def test_the_fine_tuned_loss_is_the_trainers_own_eval_loss(tiny_run):
    """The validation split is re-made as training made it: the same rows, the same number."""
    evalset = eval_set(tiny_run)
    assert len(evalset.tokens) == 4 and len(evalset.rows) == 4
    by_question = {r["instruction"]: r["response"] for r in QA_ROWS}
    assert all(by_question[row.prompt] == row.reference for row in evalset.rows)

    loaded = load_model(tiny_run)
    last_eval = events_of(tiny_run, "eval")[-1]["data"]["eval_loss"]
    assert response_loss(loaded, evalset.tokens).loss == pytest.approx(last_eval, rel=1e-3)


def test_the_mlx_loss_agrees_with_the_torch_loss(tiny_qwen3, tiny_run):
    """The same base weights give the same held-out loss through mlx as through torch."""
    pytest.importorskip("mlx_lm")
    rows = eval_set(tiny_run).tokens
    torch_loss = response_loss(load_model(tiny_qwen3), rows)
    mlx_loaded = load_model(FineTuningConfig(model_name=tiny_qwen3, backend="mlx",
                                             output_dir=str(tiny_run / "none")))
    assert mlx_loaded.backend == "mlx"
    mlx_loss = response_loss(mlx_loaded, rows)
    assert mlx_loss.tokens == torch_loss.tokens
    assert mlx_loss.loss == pytest.approx(torch_loss.loss, rel=1e-2)


# ---------------------------------------------------------------------------- scores
def test_exact_match_ignores_case_spaces_trailing_punctuation_and_thinking():
    """Qwen3's <think> block is left out before an answer is compared."""
    assert exact_match("  quillby ", "Quillby.") == 1.0
    assert exact_match("<think>\nThe otter?\n</think>\n\nThe mascot is  Quillby!",
                       "the mascot is quillby") == 1.0
    assert exact_match("Quillby the otter", "Quillby") == 0.0
    assert normalise("Beijing。") == "beijing"


def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence():
    """3 words of 4 in order, against 3 of 5: F1 = 2PR / (P + R); CJK counts by character."""
    assert rouge_l("the otter is purple", "the purple otter is named") == pytest.approx(
        2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    assert rouge_l("Quillby.", "quillby") == 1.0
    assert rouge_l("", "Quillby") == 0.0
    # 北京 (or 首都) is the longest common run of characters: 2 of 5 either way
    assert rouge_l("<think>x</think>北京是首都", "首都是北京") == pytest.approx(2 / 5)


def test_rouge_l_agrees_with_the_rouge_score_package_on_english():
    """Where rouge-score is installed, both give the same F1 on ASCII text."""
    scorer = pytest.importorskip("rouge_score.rouge_scorer").RougeScorer(["rougeL"])
    pairs = [("The studio's mascot is a purple otter named Quillby.", FACT_A),
             ("a purple otter", FACT_A), ("1 plus 4 is 5", "1 plus 4 is five."),
             ("nothing alike", "at all")]
    for answer, reference in pairs:
        expected = scorer.score(reference, answer)["rougeL"].fmeasure
        assert rouge_l(answer, reference) == pytest.approx(expected), (answer, reference)


# ---------------------------------------------------------------------------- report and export
def test_a_file_is_evaluated_row_by_row_and_the_page_escapes_what_it_shows(tiny_run, tmp_path):
    """data= evaluates every row of a file; a question holding HTML shows as text."""
    rows = [{"instruction": "Is <b>this</b> & that bold?", "response": "No <i>it</i> is not."},
            {"instruction": "What is 9 plus 9?", "response": "9 plus 9 is 18."}]
    data = write_jsonl(tmp_path / "held_out.jsonl", rows)
    report = evaluate_run(tiny_run, data=str(data), n_prompts=5, max_new_tokens=4)
    assert report.settings["data"] == str(data) and report.settings["rows"] == 2
    assert [p.prompt for p in report.prompts] == [r["instruction"] for r in rows]
    assert report.base.loss > 0 and report.tuned.loss > 0 and report.tuned.tokens > 0
    page = report.html_path.read_text()
    assert "<b>this</b>" not in page and "&lt;b&gt;this&lt;/b&gt; &amp; that" in page
    assert "No &lt;i&gt;it&lt;/i&gt; is not." in page
    again = EvalReport.load(report.json_path)
    assert again.tuned.loss == pytest.approx(report.tuned.loss)
    assert again.prompts[1].reference == "9 plus 9 is 18."


def test_evalscope_export_keeps_system_prompts_and_turns_conversations_into_messages(tmp_path):
    """One layout a file: query/response (+ system) for single questions, else messages."""
    single = [EvalRow([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Capital of France?"}], "Paris."),
              EvalRow([{"role": "user", "content": "2+2?"}], "4")]
    lines = [json.loads(x) for x in export_evalscope(single, tmp_path / "a.jsonl")
             .read_text().splitlines()]
    assert lines == [{"system": "Be brief.", "query": "Capital of France?", "response": "Paris."},
                     {"query": "2+2?", "response": "4"}]
    chat = single + [EvalRow([{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello."},
                              {"role": "user", "content": "Bye?"}], "Goodbye.")]
    lines = [json.loads(x) for x in export_evalscope(chat, tmp_path / "b.jsonl")
             .read_text().splitlines()]
    assert all(set(line) == {"messages", "response"} for line in lines)
    assert lines[2]["messages"][-1] == {"role": "user", "content": "Bye?"}


# ---------------------------------------------------------------------------- no model, a judge
def test_a_scripted_run_is_evaluated_without_a_loss_and_says_why(scripted_run):
    """The scripted backend runs no model: its answers are compared, the loss is skipped."""
    report = evaluate_run(scripted_run, n_prompts=2, max_new_tokens=10)
    assert report.base.loss is None and report.tuned.loss is None
    assert any("held-out loss skipped" in note for note in report.notes)
    assert "of 3 steps" in report.prompts[0].tuned.text
    assert "of 0 steps" in report.prompts[0].base.text
    assert report.tuned.exact_match == 0.0 and report.tuned.rouge_l is not None


def test_a_judge_behind_an_openai_compatible_endpoint_scores_both_models(scripted_run,
                                                                         monkeypatch):
    """A local stub endpoint marks the scripted answers; scores are averaged per model."""
    pytest.importorskip("openai")
    server = HTTPServer(("127.0.0.1", 0), JudgeStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(JudgeStub, "key_word", "of 3 steps")   # only the tuned answers have it
    try:
        judge = Judge(f"http://127.0.0.1:{server.server_port}/v1", "stub-judge")
        report = evaluate_run(scripted_run, n_prompts=2, max_new_tokens=10, judge=judge)
    finally:
        server.shutdown()
    assert report.base.judge == 3 and report.tuned.judge == 9
    assert [p.tuned.judge for p in report.prompts] == [9, 9]
    assert report.settings["judge"] == {"base_url": judge.base_url, "model": "stub-judge"}


def test_a_judge_that_does_not_answer_leaves_a_note_and_keeps_the_rest(scripted_run):
    """A failing judge costs its scores, not the answers already written."""
    pytest.importorskip("openai")
    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = evaluate_run(scripted_run, n_prompts=1, max_new_tokens=10,
                          judge=Judge(f"http://127.0.0.1:{port}/v1", "m"))
    assert report.base.judge is None and report.tuned.judge is None
    failed = f"the judge at http://127.0.0.1:{port}/v1 failed"
    assert any(note.startswith(failed) for note in report.notes)
    assert "of 3 steps" in report.prompts[0].tuned.text and report.json_path.is_file()


def test_the_judges_prompt_holds_the_reference_and_its_score_is_read_back():
    """The rubric shows the conversation, the reference and the answer without its thinking."""
    row = EvalRow([{"role": "user", "content": "Mascot?"}], "Quillby.")
    prompt = Judge("http://x/v1", "m").prompt(row, "<think>hmm</think>It is Quillby.")
    assert "User: Mascot?" in prompt and "Quillby." in prompt and "hmm" not in prompt
    assert parse_score("Score: 8\nclose enough") == 8
    assert parse_score("**Score:** 7.5") == 7.5
    assert parse_score("I give it 6/10.") == 6
    assert parse_score("no idea") is None and parse_score("Score: 42") is None


def test_missing_extras_are_refused_before_any_model_loads_with_the_pip_command(scripted_run,
                                                                               monkeypatch):
    """Without lm-eval or openai the evaluation stops at once and says what to install."""
    monkeypatch.setitem(sys.modules, "lm_eval", None)     # import lm_eval now fails
    monkeypatch.setitem(sys.modules, "openai", None)
    reports = list(scripted_run.glob("eval/*"))
    with pytest.raises(EvalError) as refused:
        evaluate_run(scripted_run, tasks=["gsm8k"], judge=Judge("http://x/v1", "m"))
    assert 'pip install "qwen3-studio[eval]"' in str(refused.value)
    assert 'pip install "qwen3-studio[judge]"' in str(refused.value)
    assert list(scripted_run.glob("eval/*")) == reports


def test_a_local_task_file_without_an_answer_is_refused_by_name(tiny_run, tmp_path):
    """A JSONL task is checked before any model loads: it needs a question and an answer."""
    task = write_jsonl(tmp_path / "bad.jsonl", [{"question": "1 plus 1?", "label": "2"}])
    with pytest.raises(EvalError, match="bad.jsonl: a task row needs .* the first row has "
                                        "question, label"):
        evaluate_run(tiny_run, tasks=[str(task)])


def test_a_run_without_a_validation_split_asks_for_a_file(tiny_qwen3, tmp_path):
    """val_size 0 leaves nothing held out: the refusal says to give data=."""
    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    run_fine_tuning(data_path=str(data), config=quick_config(
        tiny_qwen3, tmp_path / "runs" / "all", backend="scripted", val_size=0))
    with pytest.raises(EvalError, match="data="):
        evaluate_run(tmp_path / "runs" / "all")


# ---------------------------------------------------------------------------- lm-eval
@pytest.mark.slow
def test_lm_eval_tasks_from_local_jsonl_score_both_models(tiny_run, tmp_path):
    """A generate_until task and a multiple-choice task from local JSONL, offline, through
    lm_eval.simple_evaluate with the run's peft adapter."""
    pytest.importorskip("lm_eval")
    gen = write_jsonl(tmp_path / "sums.jsonl",
                      [{"question": r["instruction"], "answer": r["response"]}
                       for r in QA_ROWS[:2]])
    mc = write_jsonl(tmp_path / "pick.jsonl",
                     [{"question": "1 plus 1 is", "choices": ["2", "3"], "answer": 0},
                      {"question": "2 plus 2 is", "choices": ["5", "4"], "answer": 1}])
    report = evaluate_run(tiny_run, n_prompts=0, max_new_tokens=4, tasks=[str(gen), str(mc)])
    for scores in (report.base, report.tuned):
        assert set(scores.tasks) == {"studio_sums", "studio_pick"}
        assert 0 <= scores.tasks["studio_sums"]["exact_match"] <= 1
        assert 0 <= scores.tasks["studio_pick"]["acc"] <= 1
    assert "studio_pick acc" in report.summary()
