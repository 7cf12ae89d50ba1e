"""The served studio as an attacker and a careless operator meet it (issue #15, items 1, 2, 7
and 12): no exposure without a login, logins from a file or the environment and out of `ps`,
failed logins slowed down, every path the page's API takes confined to the studio's folders with
refusals that never say whether a path exists, Gradio's published file-route attacks replayed,
and random files fuzzed through the server. A real server subprocess over real HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from studio.service.access import Confinement, Logins, Outside
from studio.markdown import code
from tests.conftest import QA_ROWS, write_jsonl
from tests.servers import ROOT, Server, free_port, launch

USER, PASS = "alice", "s3cret-from-a-file"
ARGV_USER, ARGV_PASS = "bob", "argv-pass-9431"


def launch_page(tmp: Path, port: int, *flags: str, env: dict | None = None) -> Server:
    """launch.py over tmp/runs on `port` with `flags`, its output in tmp/server.log."""
    return launch(["launch.py", "--runs-dir", str(tmp / "runs"), "--port", str(port), *flags],
                  f"http://127.0.0.1:{port}/", tmp / "server.log", env)


# Loaded into the served process (sitecustomize): every file or folder it opens or lists under
# the watched folder is written down, whatever code does it.
OPENS_HEARD = """
import os, sys
_watched = tuple(os.environ["STUDIO_TEST_WATCHED"].split(os.pathsep))
_heard = os.environ["STUDIO_TEST_HEARD"]
def _hear(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(_watched):
            with open(_heard, "a") as f:
                f.write(event + " " + path + "\\n")
sys.addaudithook(_hear)
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A page on every interface with logins from --auth-file, --auth and QWEN3_STUDIO_AUTH,
    its runs folder in one temporary folder (nothing else allowed), and every file it opens in
    that folder's `outside` (which the page may not touch), or in runs/control (which it may),
    written to `opened`."""
    tmp = tmp_path_factory.mktemp("guarded")
    (tmp / "logins").write_text(f"# the studio's logins\n{USER}:{PASS}\n")
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(OPENS_HEARD)
    (tmp / "outside").mkdir()
    port = free_port()
    server = launch_page(tmp, port, "--host", "0.0.0.0", "--auth-file",
                  str(tmp / "logins"), "--auth", f"{ARGV_USER}:{ARGV_PASS}",
                  env={"QWEN3_STUDIO_AUTH": "carol:env-pass",
                       "PYTHONPATH": os.pathsep.join(filter(None, [
                           str(tmp / "hook"), os.environ.get("PYTHONPATH")])),
                       "STUDIO_TEST_WATCHED": os.pathsep.join(
                           [str(tmp / "outside"), str(tmp / "runs" / "control")]),
                       "STUDIO_TEST_HEARD": str(tmp / "opened")})
    server.ready(timeout=60)
    yield server.proc, server.url, tmp
    server.stop()


@pytest.fixture(scope="module")
def client(guarded):
    from gradio_client import Client

    return Client(guarded[1], auth=(USER, PASS), verbose=False)


def login(url: str, user: str, password: str) -> tuple[int, float]:
    body = f"username={user}&password={password}".encode()
    t0 = time.time()
    try:
        status = urllib.request.urlopen(urllib.request.Request(url + "login", data=body),
                                        timeout=30).status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.time() - t0


# ---------------------------------------------------------------------------- exposure
@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--share"]])
def test_serving_beyond_this_machine_without_a_login_is_refused(tmp_path, flags):
    """--host 0.0.0.0 or --share with no login: exit 2 at once, naming the ways to give one."""
    server = launch_page(tmp_path, free_port(), *flags)
    assert server.proc.wait(30) == 2
    said = (tmp_path / "server.log").read_text()
    assert "--auth-file" in said and "QWEN3_STUDIO_AUTH" in said and "--insecure-no-auth" in said
    assert not (tmp_path / "runs").exists()


def test_the_api_server_refuses_the_same_way(tmp_path):
    """`python -m studio serve --host 0.0.0.0` without a login: the same rule, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "studio", "serve", "--host", "0.0.0.0",
                           "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--insecure-no-auth" in proc.stderr


def test_an_empty_password_is_refused_at_start_naming_the_login(tmp_path):
    """`alice:` in the auth file (or QWEN3_STUDIO_AUTH) was accepted silently, a login anyone
    could type (issue #39, item 9): the server does not start, and says which login."""
    (tmp_path / "logins").write_text("bob:fine\nalice:\n")
    server = launch_page(tmp_path, free_port(), "--auth-file", str(tmp_path / "logins"))
    assert server.proc.wait(30) == 2
    said = (tmp_path / "server.log").read_text()
    assert "line 2" in said and "'alice' has an empty password" in said
    server = launch_page(tmp_path, free_port(), env={"QWEN3_STUDIO_AUTH": "carol:"})
    assert server.proc.wait(30) == 2 and "'carol' has an empty password" in \
        (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_insecure_no_auth_serves_with_a_warning_in_the_console_and_a_banner(tmp_path):
    """--host 0.0.0.0 --insecure-no-auth: served, warned on the console and on the page."""
    server = launch_page(tmp_path, free_port(), "--host", "0.0.0.0", "--insecure-no-auth")
    try:
        server.ready(timeout=60)
        config = urllib.request.urlopen(server.url + "config", timeout=10).read()
        assert b"insecure-banner" in config and b"page.insecure" in config
        assert "WARNING" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()


def test_a_login_from_the_environment_opens_the_page(guarded):
    """QWEN3_STUDIO_AUTH=USER:PASS is a login beside the file's; a wrong password is not."""
    _, url, _ = guarded
    assert login(url, "carol", "env-pass")[0] == 200
    assert login(url, "carol", "nope")[0] == 400


def test_the_auth_password_is_not_in_ps(guarded):
    """--auth USER:PASS on the command line: `ps` shows the user, not the password."""
    proc, url, _ = guarded
    shown = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(proc.pid)],
                           capture_output=True, text=True).stdout
    assert f"{ARGV_USER}:" in shown and ARGV_PASS not in shown
    assert login(url, ARGV_USER, ARGV_PASS)[0] == 200        # still the login


def test_failed_logins_are_slowed_down_and_a_success_clears_it(guarded):
    """Each wrong password for a user makes the next attempt wait longer; the right one
    still gets in (after its wait) and clears the count."""
    _, url, _ = guarded
    first = login(url, USER, "wrong-1")
    second = login(url, USER, "wrong-2")
    third = login(url, USER, "wrong-3")
    assert first[0] == second[0] == third[0] == 400
    assert second[1] >= 0.45 and third[1] >= 0.95
    assert login(url, USER, PASS)[0] == 200
    assert login(url, USER, PASS)[1] < 0.45


@pytest.mark.slow
def test_logins_sent_at_once_wait_their_turns_and_new_names_do_not_start_afresh(guarded):
    """Five wrong passwords for one name sent at once are checked one after another, each
    after the delay the one before earned (41 parallel logins once all ended in 8 s and the
    right one got in: issue #39, item 7); wrong names from one address slow that address."""
    from concurrent.futures import ThreadPoolExecutor

    _, url, _ = guarded
    with ThreadPoolExecutor(5) as pool:
        tries = list(pool.map(lambda n: login(url, USER, f"parallel-{n}"), range(5)))
    assert all(status == 400 for status, _ in tries)
    assert max(seconds for _, seconds in tries) >= 7.0      # 0.5 + 1 + 2 + 4 s, in turn
    assert login(url, USER, PASS)[0] == 200                 # after its wait; clears both
    seconds = [login(url, f"mallory-{n}", "guess")[1] for n in range(3)]
    assert seconds[2] >= 0.95                               # a new name, the same address
    assert login(url, USER, PASS)[0] == 200


def test_logins_wait_longer_after_each_failure_up_to_a_bound():
    """Logins.delay doubles per failure from 0.5 s to 8 s; other users are not slowed."""
    logins = Logins([(USER, PASS)])
    delays = []
    for _ in range(7):
        assert not logins.check(USER, "guess")
        delays.append(logins.delay(USER))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0] and logins.delay("bob") == 0
    assert logins.check(USER, PASS) and logins.delay(USER) == 0


# ---------------------------------------------------------------------------- paths confined
def refusal(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as refused:
        client.predict(*args, api_name=api_name)
    return str(refused.value)


def test_paths_outside_the_studio_are_refused_alike_whether_they_exist_or_not(client, guarded,
                                                                             tmp_path):
    """A dataset, a page of rows, a run to stop or watch, a chat model outside the served
    folders: refused with the same words for a real file and a missing one, and the server's
    working folder is never printed."""
    secret = write_jsonl(tmp_path / "secret.jsonl", QA_ROWS)
    missing = tmp_path / "missing.jsonl"
    for api_name in ("/inspect_data", "/stop_run", "/run_status", "/chat_reply"):
        extra = ["hi"] if api_name == "/chat_reply" else []
        said = [refusal(client, str(p), *extra, api_name=api_name).replace(str(p), "PATH")
                for p in (secret, missing)]
        assert said[0] == said[1] and "outside the folders" in said[0], (api_name, said)
        assert str(ROOT) not in said[0]
    assert "outside" in refusal(client, "/etc", "hi", api_name="/chat_reply")
    relative = refusal(client, "missing.jsonl", "", api_name="/inspect_data")
    assert "not found" in relative and str(ROOT) not in relative     # issue #39, item 9
    rows = client.predict(str(secret), 1, api_name="/next_page")     # the page stays as it was
    assert "instruction" not in json.dumps(rows)


def test_a_symlink_in_the_runs_folder_is_followed_before_the_check(client, guarded, tmp_path):
    """runs/link.jsonl -> a file outside: refused, as the file itself would be."""
    outside = write_jsonl(tmp_path / "outside.jsonl", QA_ROWS)
    link = guarded[2] / "runs" / "link.jsonl"
    link.symlink_to(outside)
    assert "outside the folders" in refusal(client, str(link), api_name="/inspect_data")


def test_a_run_whose_paths_lie_outside_is_not_started(client, tmp_path):
    """start_run with a data_path outside: refused before anything starts."""
    import yaml

    data = write_jsonl(tmp_path / "d.jsonl", QA_ROWS)
    said = refusal(client, yaml.safe_dump({"data_path": str(data)}), api_name="/start_run")
    assert "outside the folders" in said


@pytest.mark.slow
def test_files_inside_the_studio_and_hub_ids_are_still_taken(client, guarded):
    """The bundled example data is read; a Hub id is taken as an id, not a path."""
    example = ROOT / "assets" / "example_alpaca.jsonl"
    info = client.predict(str(example), "", api_name="/inspect_data")
    assert info["rows"] > 0


def test_stopping_a_run_that_does_not_exist_says_so(client, guarded):
    """stop_run on a deleted run's folder: 'no such run', not a cheerful 'stopping'."""
    said = refusal(client, str(guarded[2] / "runs" / "gone"), api_name="/stop_run")
    assert "not a run" in said
    assert not (guarded[2] / "runs" / "gone").exists()     # no STOP file made a folder


def call_page(session, fn_index: int, data: list, timeout: float = 60) -> dict:
    """One event of the page, as its browser sends it (the queue's join, then its stream), by
    index: public and private endpoints alike. The final message: success, output or error."""
    import uuid

    session_hash = uuid.uuid4().hex
    joined = session.post("gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None,
        "trigger_id": None})
    if joined.status_code != 200:
        return {"success": False, "refused": joined.text[:200]}
    with session.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash},
                        timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") in ("process_completed", "close_stream"):
                    return message
    return {}


@pytest.mark.slow
def test_no_page_event_reads_a_path_outside_the_studio(guarded):
    """Every event the page's server answers (named or not, as a crafted request can send
    them), given a run folder, a dataset or a model folder outside the served folders in each
    of its text and picker inputs, opens nothing there: the server process itself says so (an
    audit hook writes down every file it opens in that folder). Issue #40, item 4."""
    import httpx

    from studio import FineTuningConfig

    proc, url, tmp = guarded
    outside = tmp / "outside"
    secret = write_jsonl(outside / "secret.jsonl", QA_ROWS)
    run = outside / "run"
    (run / "adapter").mkdir(parents=True)
    FineTuningConfig(data_path=str(secret)).save(run / "config.yaml")
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "status.json").write_text('{"state": "finished"}')
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "data": {"loss": 1.0}}\n')
    (outside / "model").mkdir()
    (outside / "model" / "config.json").write_text('{"model_type": "qwen3"}')
    paths = [str(run), str(secret)]
    (tmp / "opened").unlink(missing_ok=True)

    session = httpx.Client(base_url=url, timeout=60)
    assert session.post("login", data={"username": USER, "password": PASS}).status_code < 400
    config = session.get("config").json()
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    calls = 0
    for dependency in config["dependencies"]:
        if not dependency.get("backend_fn"):
            continue
        inputs = dependency["inputs"]
        takes_text = [i for i, c in enumerate(inputs) if kinds.get(c) in ("textbox", "dropdown")]
        for path in paths:
            # all at once, and one at a time where there are few (the form's handlers take
            # every field: all at once is how a person would send them)
            tries = [list(takes_text)] + ([[i] for i in takes_text] if len(takes_text) <= 4
                                          else []) if takes_text else []
            for given in tries:
                data = [path if i in given else None if i in takes_text else values.get(c)
                        for i, c in enumerate(inputs)]
                call_page(session, dependency["id"], data)
                calls += 1
    assert calls > 150
    heard = (tmp / "opened").read_text() if (tmp / "opened").exists() else ""
    assert heard == "", heard
    (tmp / "runs" / "control").mkdir()
    control = write_jsonl(tmp / "runs" / "control" / "qa.jsonl", QA_ROWS)   # the hook hears
    assert call_page(session, next(d["id"] for d in config["dependencies"]
                                   if d.get("api_name") == "inspect_data"),
                     [str(control), ""])["success"]
    assert str(control) in (tmp / "opened").read_text()
    assert proc.poll() is None                     # and the server is still up


def test_the_confinement_resolves_symlinks_and_dot_dots(tmp_path):
    """Confinement.path: inside is the resolved path; ../ and links out are Outside."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    confine = Confinement([root])
    assert confine.path(root / "a.csv") == (root / "a.csv").resolve()
    for escape in (root / ".." / "x.csv", root / "out" / "x.csv", "/etc/passwd", ""):
        with pytest.raises(Outside):
            confine.path(escape)


def test_the_served_folders_hold_the_example_datasets(tmp_path):
    """The page's example buttons load from the assets folder, wherever the package sits: every
    example shipped is inside what a served studio confines to."""
    from studio.data.readers import examples
    from studio.service.actions import Service

    confine = Service.served(tmp_path / "runs").paths.confine
    assert len(examples()) >= 3
    for example in examples():
        assert confine.path(example) == example.resolve()


def test_the_page_asks_a_judge_only_on_this_machine_or_an_allowed_host(tmp_path):
    """Evaluate's judge URL makes the server call it: an address inside its network (a cloud
    metadata service) is refused before anything is loaded; loopback and --allow-judge hosts
    pass the check."""
    from studio.evaluate.evaluation import Judge
    from studio.service.actions import Refused, Service

    served = Service.served(tmp_path / "runs")
    served.paths.judge_hosts = {"api.openai.com"}
    for url in ("http://169.254.169.254/latest", "http://10.0.0.5:8000/v1", "not a url"):
        with pytest.raises(Refused, match="--allow-judge"):
            served.evaluate(tmp_path / "runs" / "any", judge=Judge(url, "m"))
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1",
                "https://api.openai.com/v1"):
        served.paths.judge(url)


def test_an_owner_name_path_where_the_server_runs_is_not_told_from_a_hub_id(tmp_path,
                                                                            monkeypatch):
    """`etc/pw` exists where the server runs, `foo/bar` does not; both are Hub-shaped and
    outside the served folders: the page gets the same Hub refusal for both, as a dataset, a
    model and a bare name, and never the local file's rows."""
    from studio.data import DataError
    from studio.service.actions import Refused, Service

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    write_jsonl(tmp_path / "etc" / "pw", QA_ROWS)
    served = Service.served(tmp_path / "runs")

    def said(call, name):
        with pytest.raises((DataError, Refused)) as refused:
            call(name)
        return str(refused.value).replace(name, "NAME")

    for call in (served.data.dataset, served.model):
        for real, missing in (("etc/pw", "foo/bar"), ("etc", "foo")):
            assert said(call, real) == said(call, missing), (call, real)


# ---------------------------------------------------------------------------- markdown
def test_a_column_name_cannot_end_its_code_span():
    """code(): the fence is longer than any backtick run inside; newlines cannot break it."""
    assert code("plain") == "`plain`"
    assert code("a`b") == "`` a`b ``"
    assert code("x``<img src=x onerror=alert(1)>") == "``` x``<img src=x onerror=alert(1)> ```"
    assert "\n" not in code("two\nlines")


def test_evaluating_exporting_or_resuming_a_folder_outside_is_refused(client, tmp_path):
    """A run-shaped folder outside the studio: /evaluate and /export_run refuse it (Gradio's
    check of the run picker's choices answers first), and the page's service behind them
    refuses it too, for every action; nothing is written there."""
    from gradio_client.exceptions import AppError

    from studio import FineTuningConfig
    from studio.service.actions import Service

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    FineTuningConfig().save(outside / "config.yaml")
    with pytest.raises(AppError):
        client.predict(str(outside), "", 2, 8, "", "", "", api_name="/evaluate")
    with pytest.raises(AppError):
        client.predict(str(outside), "adapter", "q8_0", api_name="/export_run")
    service = Service.served(tmp_path / "runs")
    for action in (lambda: service.evaluate(outside), lambda: service.export(outside, "adapter"),
                   lambda: service.export_estimate(outside, "adapter"),
                   lambda: service.resume(outside), lambda: service.stop(outside),
                   lambda: service.model(str(outside)), lambda: service.data.dataset(outside),
                   lambda: service.data.tokenizer(str(outside)),
                   lambda: service.export_evalscope(outside),
                   lambda: service.chat_source(str(outside))):
        with pytest.raises(Exception, match="outside the folders"):
            action()
    assert sorted(p.name for p in outside.iterdir()) == ["config.yaml"]


def test_exporting_for_evalscope_reads_no_file_outside(tmp_path):
    """Evaluate's Export for EvalScope took its data path unchecked, and an outside JSONL came
    back as a download (issue #39, item 5): the page's service refuses it, in the same words
    whether the file exists or not, before anything is read."""
    from studio import FineTuningConfig
    from studio.service.actions import Refused, Service

    service = Service.served(tmp_path / "runs")
    run = tmp_path / "runs" / "a-run"
    run.mkdir(parents=True)
    FineTuningConfig().save(run / "config.yaml")
    secret = write_jsonl(tmp_path / "secret.jsonl", QA_ROWS)
    said = []
    for data in (secret, tmp_path / "missing.jsonl"):
        with pytest.raises(Refused, match="outside the folders") as refused:
            service.export_evalscope(run, str(data))
        said.append(str(refused.value).replace(str(data), "PATH"))
    assert said[0] == said[1] and not (run / "eval").exists()


# Gradio's published file-route attacks (its security advisories, 2023-2025): traversal in
# /file=, encoded dots, the temporary cache's parent, static and asset routes, the component
# server calling a method with a path (CVE-2024-1561), the proxy route (SSRF).
FILE_ROUTE_ATTACKS = [
    "file={secret}", "gradio_api/file={secret}", "file=/etc/passwd", "gradio_api/file=/etc/passwd",
    "gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2F..{secret}",
    "gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}",
    "gradio_api/file=/tmp/gradio/../../../../../../../..{secret}",
    "gradio_api/file={runs}/../logins", "gradio_api/file={runs}/uploads/../../logins",
    "static/../../../../../../../..{secret}", "assets/..%2F..%2F..%2F..%2F..%2F..%2F..{secret}",
    "gradio_api/static/..%2F..%2F..%2F..%2F..%2F..%2F..{secret}",
    "gradio_api/proxy=http://169.254.169.254/latest/meta-data/",
    "gradio_api/file=http://169.254.169.254/latest/meta-data/",
]


def test_gradios_published_file_route_attacks_read_nothing(guarded):
    """Each published attack, with and without a login: never the login file's contents (it
    lies beside the runs folder), never /etc/passwd, never a 5xx; a FileData naming a file
    outside the cache is not taken as an upload (the Data tab moves uploads); the component
    server copies nothing; the server keeps serving."""
    import http.cookiejar

    _, url, tmp = guarded
    secret, runs = tmp / "logins", tmp / "runs"
    jar = http.cookiejar.CookieJar()
    signed_in = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    signed_in.open(urllib.request.Request(url + "login", data=(
        f"username={USER}&password={PASS}").encode()), timeout=30)
    anonymous = urllib.request.build_opener()

    def body(opener, path: str, data: bytes | None = None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            with opener.open(urllib.request.Request(url + path, data=data, headers=headers),
                             timeout=30) as answer:
                return answer.status, answer.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    for attack in FILE_ROUTE_ATTACKS:
        path = attack.format(secret=secret, runs=runs)
        for opener in (signed_in, anonymous):
            status, text = body(opener, path)
            assert PASS not in text and "root:x:0" not in text, (attack, status)
            assert status < 500, (attack, status, text[:200])
            assert status != 401 or opener is anonymous, (attack, "the login did not hold")

    # a FileData that names the login file, given to the upload endpoint
    filedata = {"path": str(secret), "meta": {"_type": "gradio.FileData"},
                "orig_name": "logins.jsonl"}
    status, text = body(signed_in, "gradio_api/call/upload_data",
                        json.dumps({"data": [filedata]}).encode())
    if status == 200:
        event = json.loads(text)["event_id"]
        status, text = body(signed_in, f"gradio_api/call/upload_data/{event}")
    assert PASS not in text and secret.read_text().count(PASS) == 1
    assert not any("logins" in p.name for p in runs.rglob("*"))
    # the component server asked to pull the login file into the cache (CVE-2024-1561)
    config = json.loads(body(signed_in, "config")[1])
    for component in config["components"][:60]:
        status, text = body(signed_in, "gradio_api/component_server", json.dumps({
            "component_id": component["id"], "fn_name": "move_resource_to_block_cache",
            "data": str(secret), "session_hash": "attack"}).encode())
        assert PASS not in text and status < 500, (component.get("type"), status, text[:200])
    assert body(signed_in, "config")[0] == 200                  # still serving
    assert secret.read_text().count(PASS) == 1


@pytest.mark.slow
def test_random_files_sent_to_the_running_server_get_messages_and_it_keeps_serving(client,
                                                                                  guarded):
    """Fuzzed through HTTP: random bytes under every data suffix, uploaded and described. Each
    answer is rows or an error message in words (never a bare exception name or an empty
    error), and the server answers the next request."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    folder = guarded[2] / "fuzz"
    folder.mkdir(exist_ok=True)

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
           st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ".parquet"]))
    def upload_and_describe(data, suffix):
        sent = folder / f"data{suffix}"
        sent.write_bytes(data)
        try:
            kept = client.predict(handle_file(str(sent)), api_name="/upload_data")[0]
            info = client.predict(kept, "", api_name="/inspect_data")
            assert info["rows"] >= 1
        except AppError as e:
            said = str(e).strip()
            assert len(said) > 12 and not said.endswith("Error"), said

    upload_and_describe()
    assert isinstance(client.predict(api_name="/list_runs"), list)


def test_wrong_api_keys_on_v1_are_slowed_down_too(guarded):
    """The page's /v1 shares its logins: a wrong Bearer key is 401 and the next one waits."""
    _, url, _ = guarded

    def ask(key: str) -> tuple[int, float]:
        request = urllib.request.Request(url + "v1/models",
                                         headers={"Authorization": f"Bearer {key}"})
        t0 = time.time()
        try:
            status = urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as e:
            status = e.code
        return status, time.time() - t0

    first, second = ask("guess-1"), ask("guess-2")
    assert first[0] == second[0] == 401 and second[1] >= 0.45
    assert ask(PASS)[0] == 503          # let in: nothing is served at /v1 yet
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:              # at once: in turn all the same
        tries = list(pool.map(ask, [f"parallel-{n}" for n in range(4)]))
    assert all(status == 401 for status, _ in tries)
    assert max(seconds for _, seconds in tries) >= 3.0      # 0.5 + 1 + 2 s, in turn
    assert ask(PASS)[0] == 503
