"""The OpenAI-compatible API (studio/serve/v1.py), asked through the real `openai` client over
loopback: `python -m studio serve` as a user starts it, over a scripted run (its reply names the
adapter's steps) and a tiny Qwen3 trained for a few real steps (greedy text equal to
studio.inference.stream_reply's), behind --auth; and the page's own server answering /v1 once
the Chat tab's toggle is ticked through the page's API."""
from __future__ import annotations

import base64
import functools
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import QA_ROWS, copy_run, quick_run, write_jsonl
from tests.servers import free_port, launch

ROOT = Path(__file__).resolve().parents[1]
USER, PASS = "alice", "s3cret"
MESSAGES = [{"role": "user", "content": "What is 2 plus 3?"}]


# ---------------------------------------------------------------------------- real servers
def openai_client(url: str, key: str = PASS):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def http(url: str, body: dict | None = None, auth: str | None = f"Bearer {PASS}"):
    """(status, text) of a plain request: what curl would see."""
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": auth} if auth else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def page(folder):
    """launch.py --auth alice:s3cret over the runs folder, started first: it comes up while
    the runs train."""
    port = free_port()
    server = launch(["launch.py", "--port", str(port), "--runs-dir", str(folder / "runs"),
                     "--auth", f"{USER}:{PASS}"], f"http://127.0.0.1:{port}/v1",
                    folder / "page.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs(folder, page, tiny_qwen3, tiny_trained) -> Path:
    """Two runs: "answers" (scripted, 8 steps) and "tiny" (the suite's tiny Qwen3 run)."""
    from studio import FineTuningConfig
    from studio.service.actions import Service

    data = write_jsonl(folder / "qa.jsonl", QA_ROWS)
    runs = folder / "runs"
    config = FineTuningConfig(**quick_run(tiny_qwen3, str(data), backend="scripted",
                                          max_steps=8))
    assert Service(runs).start(config, runs / "answers", in_process=True).wait(120).state == \
        "finished"
    copy_run(tiny_trained, folder)
    return runs


@pytest.fixture(scope="module")
def api(runs):
    """`python -m studio serve --run answers --run tiny --auth alice:s3cret`."""
    port = free_port()
    server = launch(["-m", "studio", "serve", "--run", str(runs / "answers"), "--run", "tiny",
                     "--runs-dir", str(runs), "--port", str(port), "--auth", f"{USER}:{PASS}"],
                    f"http://127.0.0.1:{port}/v1", runs.parent / "serve.log").ready("/models")
    yield server
    server.stop()


@functools.cache
def scripted_reply(run: Path) -> tuple[str, int]:
    """What the scripted backend answers for this run and MESSAGES, and the prompt's tokens."""
    from studio.inference import load_model, prompt_ids

    loaded = load_model(run)
    n = len(prompt_ids(loaded.tokenizer, MESSAGES, loaded.prompt_format))
    return f"A scripted reply from a run of 8 steps to a prompt of {n} tokens.", n


# ---------------------------------------------------------------------------- python -m studio serve
@pytest.mark.slow
def test_the_served_runs_are_listed_by_their_names(api):
    """GET /v1/models: each --run under its folder's name (given as a path or a name)."""
    assert sorted(m.id for m in openai_client(api.url).models.list()) == ["answers", "tiny"]
    assert "serving answers, tiny at http://127.0.0.1" in api.log.read_text()
    assert "from openai import OpenAI" in api.log.read_text()     # the snippet, printed


@pytest.mark.slow
def test_a_chat_completion_is_the_runs_reply_with_its_token_counts(api, runs):
    """A whole completion: the run's reply, finish_reason stop, usage counted."""
    expected, prompt_tokens = scripted_reply(runs / "answers")
    reply = openai_client(api.url).chat.completions.create(model="answers", messages=MESSAGES)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop" and reply.model == "answers"
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == prompt_tokens and reply.usage.completion_tokens > 10
    assert reply.usage.total_tokens == prompt_tokens + reply.usage.completion_tokens


@pytest.mark.slow
def test_a_streamed_completion_comes_in_pieces_and_ends_with_done(api, runs):
    """stream=True: Server-Sent Events chunks that add up to the same reply, the last one with
    finish_reason, usage when asked for, and data: [DONE] at the end."""
    expected, _ = scripted_reply(runs / "answers")
    chunks = list(openai_client(api.url).chat.completions.create(
        model="answers", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert len(pieces) > 5 and "".join(pieces) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens > 10
    status, text = http(api.url + "/chat/completions", {"model": "answers", "messages": MESSAGES,
                                                        "stream": True})
    events = [line for line in text.splitlines() if line]
    assert status == 200 and events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


@pytest.mark.slow
def test_max_tokens_and_stop_cut_the_reply(api):
    """max_tokens ends with finish_reason length; a stop string ends before it."""
    client = openai_client(api.url)
    short = client.chat.completions.create(model="answers", messages=MESSAGES, max_tokens=3)
    assert short.choices[0].message.content == "A scripted reply"
    assert short.choices[0].finish_reason == "length"
    cut = client.chat.completions.create(model="answers", messages=MESSAGES, stop=[" steps"])
    assert cut.choices[0].message.content == "A scripted reply from a run of 8"
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_a_wrong_key_gets_401_and_the_right_login_gets_in(api):
    """--auth: the password as the API key (Bearer) or HTTP Basic; anything else is 401."""
    import openai

    with pytest.raises(openai.AuthenticationError) as refused:
        openai_client(api.url, key="wrong").models.list()
    assert refused.value.status_code == 401 and "--auth" in str(refused.value)
    assert http(api.url + "/models", auth=None)[0] == 401
    basic = "Basic " + base64.b64encode(f"{USER}:{PASS}".encode()).decode()
    assert http(api.url + "/models", auth=basic)[0] == 200
    wrong = "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()
    assert http(api.url + "/models", auth=wrong)[0] == 401


@pytest.mark.slow
def test_bad_requests_say_what_to_fix_in_openais_error_shape(api):
    """An unknown model is 404 naming the served ones; a bad field is 400 naming the field."""
    import openai

    client = openai_client(api.url)
    with pytest.raises(openai.NotFoundError, match="answers, tiny"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="temperature must be a number from 0"):
        client.chat.completions.create(model="answers", messages=MESSAGES, temperature=5)
    status, text = http(api.url + "/chat/completions", {"model": "answers", "messages": []})
    error = json.loads(text)["error"]
    assert status == 400 and error["param"] == "messages" and "non-empty" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.slow
def test_concurrent_requests_queue_for_the_model(api):
    """Three requests at once all answer, one after another on the model's lock: together they
    take at least three replies' time (each word of the scripted reply takes 20 ms)."""
    from backends.scripted import SECONDS_PER_WORD

    client, replies = openai_client(api.url), []

    def ask():
        replies.append(client.chat.completions.create(model="answers", messages=MESSAGES))

    t0 = time.time()
    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    words = len(replies[0].choices[0].message.content.split())
    assert len(replies) == 3 and len({r.choices[0].message.content for r in replies}) == 1
    assert time.time() - t0 >= 3 * words * SECONDS_PER_WORD


@pytest.mark.slow
def test_a_client_that_leaves_midstream_does_not_block_the_next(api, runs):
    """A stream closed after its first chunk: the server stops that reply, frees the model,
    and answers the next request in full."""
    request = urllib.request.Request(
        api.url + "/chat/completions", headers={"Authorization": f"Bearer {PASS}",
                                                "Content-Type": "application/json"},
        data=json.dumps({"model": "answers", "messages": MESSAGES, "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.readline().startswith(b"data: ")
    reply = openai_client(api.url).chat.completions.create(model="answers", messages=MESSAGES)
    assert reply.choices[0].message.content == scripted_reply(runs / "answers")[0]


@pytest.mark.slow
def test_a_long_reply_left_by_its_client_stops_and_frees_the_model(api):
    """The tiny Qwen3 asked for 4,000 tokens (minutes on a CPU), its stream closed after the
    first chunk: the model stops, so a 2-token request to it is answered at once. The reply
    ran to its end, holding the model's lock, and the next request timed out (issue #39,
    item 6)."""
    import openai

    body = {"model": "tiny", "messages": MESSAGES, "stream": True, "max_tokens": 4000}
    request = urllib.request.Request(api.url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {PASS}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.readline().startswith(b"data: ")
    client = openai_client(api.url).with_options(timeout=30)
    try:
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    except openai.APITimeoutError:
        pytest.fail("the abandoned reply still holds the model")
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.slow
def test_requests_over_the_bounds_are_refused_before_the_model_is_held(api):
    """A reply of 10**9 tokens once held a model until the server restarted, and a 2 MB
    message for minutes (issue #39, item 6): each is refused saying which bound and its flag,
    as is a body nested too deeply to read (item 9); the model then answers at once."""
    from http.client import HTTPConnection

    for body, status, said in (
            ({"model": "tiny", "messages": MESSAGES, "max_tokens": 10**9}, 400,
             "--max-reply-tokens"),
            ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 20000}]},
             400, "--max-prompt-tokens")):
        code, text = http(api.url + "/chat/completions", body)
        assert code == status and said in json.loads(text)["error"]["message"], text
    # a 2 MB body is answered from its length, before it is sent (as to Expect: 100-continue)
    port = int(api.url.split(":")[-1].split("/")[0])
    connection = HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Authorization", f"Bearer {PASS}"), ("Content-Length", "2000000"),
                        ("Content-Type", "application/json")):
        connection.putheader(name, value)
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and "--max-request-size" in answer.read().decode()
    nested = "[" * 100_000 + "]" * 100_000
    request = urllib.request.Request(api.url + "/chat/completions", data=nested.encode(),
                                     headers={"Authorization": f"Bearer {PASS}",
                                              "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400 and "nested too deeply" in refused.value.read().decode()
    reply = openai_client(api.url).with_options(timeout=30).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.slow
def test_a_cancelled_chat_reply_on_the_page_stops_generating(page, runs):
    """The page's /chat_reply asked for 4,000 tokens and cancelled by its client: the server
    goes quiet (its CPU time stops growing); two generation threads once ran on to the end
    (issue #39, item 6). A reply over --max-reply-tokens is refused with the flag's name."""
    import psutil
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    page.ready("/models")
    studio = Client(page.url.removesuffix("v1"), auth=(USER, PASS), verbose=False)
    with pytest.raises(AppError, match="--max-reply-tokens"):
        studio.predict(str(runs / "tiny"), "Hi", 10**9, 0.7, False, api_name="/chat_reply")
    job = studio.submit(str(runs / "tiny"), "Hi", 4000, 0.7, False, api_name="/chat_reply")
    deadline = time.time() + 120
    while not job.outputs() and time.time() < deadline:
        time.sleep(0.2)
    assert job.outputs(), "no reply began"
    job.cancel()
    server = psutil.Process(page.proc.pid)
    time.sleep(3)                 # the cancel reaches the generation at its next token
    before = sum(server.cpu_times()[:2])
    time.sleep(3)
    assert sum(server.cpu_times()[:2]) - before < 1.0, "the reply goes on after its cancel"


def test_qwen3_thinking_goes_to_reasoning_content_piece_by_piece():
    """<think>...</think> becomes reasoning_content and the rest content, and streamed a
    character at a time each part only grows, ending where the whole reply's split ends."""
    from studio.serve.v1 import split_reply

    text = "<think>\nAdd 2 and 3.\n</think>\n\n2 plus 3 is 5. <b>Sure</b>"
    assert split_reply(text) == ("Add 2 and 3.\n", "2 plus 3 is 5. <b>Sure</b>")
    assert split_reply("Just an answer") == ("", "Just an answer")
    shown = ("", "")
    for n in range(len(text) + 1):
        now = split_reply(text[:n], done=n == len(text))
        assert all(new.startswith(old) for old, new in zip(shown, now)), (text[:n], now)
        shown = now
    assert shown == split_reply(text)


@pytest.mark.slow
def test_a_real_tiny_model_answers_as_the_studios_chat_does(api, runs):
    """The tiny Qwen3 with its trained adapter: the API's greedy text (whole and streamed) is
    stream_reply's at temperature 0, split as Qwen3 thinking into reasoning and answer; the
    thinking switch in extra_body changes the prompt as the chat template does."""
    from studio.inference import load_model, stream_reply
    from studio.serve.v1 import split_reply

    expected = "".join(stream_reply(load_model(runs / "tiny"), MESSAGES, max_new_tokens=16,
                                    temperature=0))
    reasoning, content = split_reply(expected)
    client = openai_client(api.url)
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16,
                                           temperature=0)
    message = reply.choices[0].message
    assert message.content == content and content
    assert (message.model_extra or {}).get("reasoning_content", "") == reasoning
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16,
                                              temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == content
    thinking = client.chat.completions.create(       # vLLM's switch reaches the chat template
        model="tiny", messages=MESSAGES, max_tokens=1, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert thinking.usage.prompt_tokens < reply.usage.prompt_tokens   # no empty <think></think>


@pytest.mark.slow
def test_a_host_beyond_loopback_without_auth_is_refused(runs, capsys):
    """serve --host 0.0.0.0 without --auth: a message naming the fix, exit 2, nothing served
    (the command line's own main, in this process: it refuses before loading anything)."""
    from studio.cli import main

    assert main(["serve", "--run", str(runs / "answers"), "--host", "0.0.0.0"]) == 2
    said = capsys.readouterr().err
    assert "--host 0.0.0.0" in said and "--auth USER:PASS" in said


@pytest.mark.slow
def test_every_run_with_an_adapter_is_served_without_run(runs):
    """No --run: the runs folder's runs, found afresh (a run trained meanwhile appears)."""
    from studio.serve.v1 import Served, exposure_problem
    from studio.service.actions import Service

    assert {m["id"] for m in Served(Service(runs)).models()} == {"answers", "tiny"}
    assert exposure_problem("127.0.0.1", None) is None
    assert exposure_problem("127.0.0.1", None, share=True)       # a gradio.live link is public
    assert exposure_problem("0.0.0.0", (USER, PASS)) is None


# ---------------------------------------------------------------------------- the page
@pytest.mark.slow
def test_the_pages_toggle_serves_the_chosen_run_at_its_own_v1(page, runs):
    """launch.py --auth: /v1 answers 503 until the Chat tab's toggle (through the page's API)
    serves a run, then the openai client gets its reply on the page's port behind the page's
    login, and Gradio's own routes still ask for that login; unticked, 503 again."""
    import openai
    from gradio_client import Client

    page.ready("/models")
    client = openai_client(page.url)
    with pytest.raises(openai.InternalServerError, match="tick 'Serve this run"):
        client.models.list()
    assert http(page.url.removesuffix("v1") + "config", auth=None)[0] == 401
    studio = Client(page.url.removesuffix("v1"), auth=(USER, PASS), verbose=False)
    on, status, example = studio.predict(True, str(runs / "answers"),
                                         api_name="/serve_openai")
    assert on and f"{page.url}" in status and 'model="answers"' in example["value"]
    assert [m.id for m in client.models.list()] == ["answers"]
    expected, _ = scripted_reply(runs / "answers")
    reply = client.chat.completions.create(model="answers", messages=MESSAGES)
    assert reply.choices[0].message.content == expected
    with pytest.raises(openai.AuthenticationError):
        openai_client(page.url, key="wrong").models.list()
    assert studio.predict(False, str(runs / "answers"), api_name="/serve_openai")[0] is False
    with pytest.raises(openai.InternalServerError):
        client.models.list()


@pytest.mark.slow
def test_the_serve_toggle_refuses_a_folder_outside_alike_whether_it_exists_or_not(page, runs,
                                                                                 tmp_path):
    """The toggle read a folder outside the studio's (its config.yaml, whether it is a folder)
    and served it (issue #39, item 5): refused, in the same words for a run-shaped folder and a
    path that does not exist, and nothing is served."""
    
    from gradio_client import Client

    page.ready("/models")
    outside = tmp_path / "elsewhere"
    shutil.copytree(runs / "answers", outside)
    studio = Client(page.url.removesuffix("v1"), auth=(USER, PASS), verbose=False)
    said = []
    for path in (outside, tmp_path / "missing"):
        on, status, _ = studio.predict(True, str(path), api_name="/serve_openai")
        assert on is False and "outside the folders" in status, status
        said.append(status.replace(str(path), "PATH"))
    assert said[0] == said[1]
    assert http(page.url + "/models")[0] == 503
