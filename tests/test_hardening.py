"""Hardening (#15): run state read as data, not trusted; configs typed on read; bounded work.

Real files and real processes throughout: a status.json written by hand, an unrelated live
process, a YAML config with wrong types, ten threads asking for one model at once.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from studio import FineTuningConfig
from studio.config import ConfigError
from studio.data import DataError, load_rows
from studio.runs.events import read_events
from studio.runs.history import curves, summaries
from studio.runs.store import list_runs, read_status
from studio.service.actions import Service
from tests.conftest import write_jsonl


def a_run(runs: Path, name: str, status, metrics: str = "") -> Path:
    """A run folder with a config and a status.json holding `status` as given (any JSON)."""
    run = runs / name
    run.mkdir(parents=True)
    FineTuningConfig(output_dir=str(run), backend="scripted").save(run / "config.yaml")
    (run / "status.json").write_text(json.dumps(status))
    (run / "metrics.jsonl").write_text(metrics)
    return run


@pytest.fixture
def sleeper():
    """A live process that has nothing to do with the studio."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------------------- run state
@pytest.mark.parametrize("status, why", [
    ([1, 2], "holds a JSON list"),
    ({"state": "running", "pid": "12"}, "field pid is str"),
    ({"state": {"x": 1}}, "field state is dict"),
    ({"state": "flying"}, "'flying' is not a run state"),
    ({"state": "finished", "started": "yesterday"}, "field started is str"),
])
def test_a_malformed_status_marks_its_run_unreadable_and_breaks_nothing(tmp_path, status, why):
    """Regression (#15 finding 4): a JSON list in status.json broke listing, status, attach and
    start with an AttributeError; now that run reads as unreadable, with the reason."""
    runs = tmp_path / "runs"
    bad = a_run(runs, "bad", status)
    state = read_status(bad)
    assert state.state == "unreadable" and why in state.reason
    service = Service(runs)
    assert [r.status.state for r in service.runs()] == ["unreadable"]
    assert service.active() is None and service.latest() == bad
    assert service.attach(bad).status.state == "unreadable"
    assert [s.state for s in summaries(runs)] == ["unreadable"]


def test_a_string_loss_in_metrics_is_skipped_not_drawn(tmp_path):
    """Regression (#15 finding 4): a train event with "loss": "low" blanked the Train tab; a
    line whose numbers are not numbers is not an event."""
    lines = [{"kind": "train", "step": 1, "time": 1.0, "data": {"loss": 2.0}},
             {"kind": "train", "step": 2, "time": 2.0, "data": {"loss": "low"}},
             {"kind": "train", "step": 3, "time": 3.0, "data": {"loss": 1.5, "epoch": [1]}},
             {"kind": "eval", "step": 3, "time": 3.0, "data": {"eval_loss": 1.2}}]
    run = a_run(tmp_path / "runs", "r", {"state": "finished"},
                "".join(json.dumps(x) + "\n" for x in lines))
    events, _ = read_events(run / "metrics.jsonl")
    assert [(e.kind, e.step) for e in events] == [("train", 1), ("eval", 3)]
    assert [p[3] for p in curves(run).train] == [2.0]


def test_an_unrelated_live_pid_neither_trains_nor_is_stopped(tmp_path, sleeper):
    """Regression (#15 finding 3): a status.json naming any live process made the run look
    training, refused Start, and Stop killed that process. Its start time is even recorded
    right: the command line is not the studio's, so it is not the run's job."""
    runs = tmp_path / "runs"
    started = psutil.Process(sleeper.pid).create_time()
    run = a_run(runs, "forged", {"state": "running", "pid": sleeper.pid, "pid_started": started,
                                 "started": time.time()})
    legacy = a_run(runs, "legacy", {"state": "running", "pid": sleeper.pid})
    service = Service(runs)
    assert read_status(run).state == read_status(legacy).state == "interrupted"
    assert service.active() is None
    service.stop(run, wait=True)
    service.stop(legacy, wait=True)
    assert sleeper.poll() is None, "Stop killed a process that is not the run's job"


def test_another_studio_process_is_not_the_job_a_forged_status_names(tmp_path):
    """A status.json naming a live studio process that is not this run's job (the page's server,
    another run's run-job) read as training, and Stop would kill it (issue #39, item 9): only
    `run-job` of this very folder, or a process holding its job file, is its job."""
    runs = tmp_path / "runs"
    other = tmp_path / "runs" / "other"
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m",
                               "studio", *argv]) for argv in (["ui"], ["run-job", str(other)])]
    try:
        for n, proc in enumerate(procs):
            started = psutil.Process(proc.pid).create_time()
            run = a_run(runs, f"forged-{n}", {"state": "running", "pid": proc.pid,
                                              "pid_started": started, "started": time.time()})
            assert read_status(run).state == "interrupted"
            assert Service(runs).active() is None
            Service(runs).stop(run, wait=True)
            assert proc.poll() is None, "Stop killed a studio process that is not the job"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_broken_files_are_said_whole_naming_the_file(tmp_path, tiny_qwen3, qa_jsonl):
    """Raw errors (issue #39, item 9): a model whose config.json breaks its config was "a
    tokenizer problem" with an empty "Validation error for field 'hidden_size':"; YAML nested
    too deeply sent to the page's API was a RecursionError; a report.json whose score is text
    stopped the Evaluate tab with "Unknown format code 'f'"."""
    import shutil

    from studio.evaluate.report import EvalReport, ModelScores

    model = tmp_path / "broken-model"
    shutil.copytree(tiny_qwen3, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    said = Service(tmp_path / "runs").check(FineTuningConfig(model_name=str(model),
                                                             data_path=str(qa_jsonl)))
    assert len(said) == 1 and "config.json is not a valid model config" in said[0]
    assert "expected int, got str" in said[0]
    with pytest.raises(ConfigError, match="nested too deeply"):
        FineTuningConfig.from_yaml("a: " + "[" * 50_000 + "]" * 50_000, "the sent config")
    report = EvalReport(str(tmp_path), str(tmp_path / "eval" / "1"), "now", {},
                        ModelScores("base", loss=1.0), ModelScores("tuned", loss=0.5))
    report.save()
    saved = json.loads(report.json_path.read_text())
    saved["models"]["tuned"]["loss"] = "low"
    report.json_path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="tuned's loss is 'low', not a number"):
        EvalReport.load(report.folder)


# ---------------------------------------------------------------------------- config typed on read
@pytest.mark.parametrize("line, field", [
    ("learning_rate: fast", "learning_rate"), ("batch_size: [1, 2]", "batch_size"),
    ("model_name: null", "model_name"), ("lora_r: 8.5", "lora_r"), ("bf16: 'yes'", "bf16"),
    ("target_modules: [q_proj, 3]", "target_modules"), ("column_mapping: [a]", "column_mapping"),
    ("learning_rate: .nan", "learning_rate"), ("max_steps: true", "max_steps"),
])
def test_a_yaml_config_with_a_wrong_type_is_refused_naming_the_field(tmp_path, line, field):
    """Regression (#15 finding 7): wrong types passed validation and failed 60-90 s into the
    run with a TypeError; they are refused at load, the field named."""
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=rf"{field}: must be"):
        FineTuningConfig.load(path)


def test_python_configs_are_typed_too_and_lossless_spellings_taken():
    """The API gets the same check; 2e-4 as text (YAML 1.1 reads it so), 8.0 and a Path pass."""
    with pytest.raises(ConfigError, match="learning_rate: must be a number, got 'fast'"):
        FineTuningConfig(learning_rate="fast")
    c = FineTuningConfig(learning_rate="2e-4", lora_r=8.0, output_dir=Path("runs/x"),
                         column_mapping=None)
    assert (c.learning_rate, c.lora_r, c.output_dir, c.column_mapping) == \
        (2e-4, 8, "runs/x", {})


# ---------------------------------------------------------------------------- bounded work
def test_ten_first_chat_requests_load_the_model_once(tiny_qwen3, tmp_path):
    """Regression (#15 finding 8): ten simultaneous first requests loaded the model more than
    once; now one loads and the others share it."""
    service = Service(tmp_path / "runs")
    assert not service.loaded(tiny_qwen3)        # the chat says "Loading" only then
    got, gate = [], threading.Barrier(10)

    def ask():
        gate.wait()
        got.append(service.model(tiny_qwen3))

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 10 and len({id(m) for m in got}) == 1
    assert service.loaded(tiny_qwen3) and not service.loaded(tiny_qwen3, base_of_run=True)


def test_deeply_nested_json_is_a_data_error(tmp_path):
    """Regression (#15 finding 9): deep nesting gave a raw RecursionError."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_rows(str(deep))
    lines = write_jsonl(tmp_path / "deep.jsonl", [{"a": 1}])
    lines.write_text('{"instruction": ' + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(DataError, match="nested too deeply"):
        load_rows(str(lines))


def test_list_runs_survives_a_status_that_is_not_utf8(tmp_path):
    """Bytes that are not text in status.json: the run is listed as unreadable."""
    run = a_run(tmp_path / "runs", "r", {})
    (run / "status.json").write_bytes(b"\xff\xfe\x00garbage")
    assert [r.status.state for r in list_runs(tmp_path / "runs")] == ["unreadable"]


def test_responses_that_are_not_text_are_counted_in_the_report(tiny_qwen3, tmp_path):
    """Regression (#15 finding 10): lists, numbers and objects as responses were trained as
    their JSON text with no word; the report now counts them, with example rows."""
    from transformers import AutoTokenizer

    from studio.data import prepare
    from studio.data.prepare import NOT_TEXT

    answers = [[1, 2], 42, {"k": 1}, "a sentence", ["x"], 3.5]
    data = write_jsonl(tmp_path / "t.jsonl", [{"instruction": f"q{i}", "response": a}
                                              for i, a in enumerate(answers)])
    report = prepare(str(data), AutoTokenizer.from_pretrained(tiny_qwen3),
                     FineTuningConfig(model_name=tiny_qwen3, max_seq_length=128)).report
    assert report.problems[NOT_TEXT] == 5 and report.examples_of_problems[NOT_TEXT] == [0, 1, 2, 4, 5]
    assert f"{NOT_TEXT}: 5" in report.summary()


def test_a_very_wide_file_is_read_to_its_first_columns_and_says_so(tiny_qwen3, tmp_path):
    """Regression (#15 finding 5): 10,002 columns took 296 s to analyse; only the first
    MAX_COLUMNS are read (CSV, JSONL and Parquet alike), and the analysis says so."""
    import pandas as pd

    from studio.data.analysis import Analyses
    from studio.data.readers import MAX_COLUMNS, columns_left_out

    columns = ["instruction", "response"] + [f"c{i}" for i in range(600)]
    frame = pd.DataFrame([[f"q{r}", f"a{r}"] + ["x"] * 600 for r in range(8)], columns=columns)
    frame.to_csv(tmp_path / "wide.csv", index=False)
    frame.to_parquet(tmp_path / "wide.parquet")
    write_jsonl(tmp_path / "wide.jsonl", frame.to_dict("records"))
    for name in ("wide.csv", "wide.parquet", "wide.jsonl"):
        ds = load_rows(str(tmp_path / name))
        assert ds.num_columns == MAX_COLUMNS and columns_left_out(ds) == 602 - MAX_COLUMNS, name
    a = Analyses(tmp_path / "up").analyse(FineTuningConfig(
        model_name=tiny_qwen3, data_path=str(tmp_path / "wide.csv"), max_seq_length=64))
    assert f"the file has 602 columns: only the first {MAX_COLUMNS} were read" in \
        a.report.summary()


def test_a_big_file_is_analysed_on_a_sample_and_says_so(tiny_qwen3, tmp_path, monkeypatch):
    """The Data tab analyses evenly spaced rows of a big file (ANALYSIS_ROWS, made small here)
    and keeps no prepared rows from it: a run prepares every row."""
    from studio.data import analysis

    monkeypatch.setattr(analysis, "ANALYSIS_ROWS", 50)
    data = write_jsonl(tmp_path / "big.jsonl", [{"instruction": f"q{i}", "response": f"a{i}"}
                                                for i in range(240)])
    a = analysis.Analyses(tmp_path / "up").analyse(FineTuningConfig(
        model_name=tiny_qwen3, data_path=str(data), max_seq_length=64, val_size=0))
    assert a.sampled == (48, 240) and a.report.n_train == 48 and a.prepared is None
    assert "every 5th row, 48 of 240 (a run prepares them all)" in a.report.summary()


@pytest.mark.slow
def test_an_analysis_under_way_is_cancelled_and_nothing_of_it_kept(tiny_qwen3, tmp_path):
    """The Data tab's Cancel: Analyses.cancel() from another thread ends the analysis at its
    next row with a DataError, the cache keeps nothing, and the next analysis runs whole."""
    from studio.data import analysis

    data = write_jsonl(tmp_path / "big.jsonl", [{"instruction": f"question {i} " * 20,
                                                 "response": f"answer {i} " * 20}
                                                for i in range(4000)])
    config = FineTuningConfig(model_name=tiny_qwen3, data_path=str(data), max_seq_length=256)
    analyses = analysis.Analyses(tmp_path / "up")
    analyses.tokenizer(tiny_qwen3)
    timer = threading.Timer(0.5, analyses.cancel)
    timer.start()
    began = time.monotonic()
    with pytest.raises(DataError, match="cancelled"):
        analyses.analyse(config)
    assert time.monotonic() - began < 5 and analyses.cached(config) is None
    assert analyses.analyse(config).report.n_train > 3000


def test_uploads_are_bounded_moved_and_cleaned_when_no_run_uses_them(tmp_path, qa_jsonl):
    """Regression (#15 finding 5): no size limit, every upload copied again, and kept forever.
    Over the limit: refused and the temporary file deleted; else moved (one copy); a day later
    the uploads no run's config names are deleted, the used ones kept."""
    import os

    from studio.data.analysis import Analyses

    runs = tmp_path / "runs"
    service = Service(runs, max_upload_bytes=10_000)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * 10_001)
    with pytest.raises(DataError, match="over the upload limit"):
        service.data.keep_upload(str(big))
    assert not big.exists()
    used, unused = (Path(service.data.keep_upload(str(write_jsonl(tmp_path / n, [{"a": n}]))))
                    for n in ("used.jsonl", "unused.jsonl"))
    assert not (tmp_path / "used.jsonl").exists() and used.parent == runs / "uploads"
    fresh = Path(service.data.keep_upload(str(write_jsonl(tmp_path / "fresh.jsonl", [{}]))))
    FineTuningConfig(data_path=str(used)).save(runs / "r" / "config.yaml")
    day_ago = time.time() - 25 * 3600
    for f in (used, unused):
        os.utime(f, (day_ago, day_ago))
    assert Analyses(runs / "uploads").clean_uploads(runs) == [unused]
    assert used.exists() and fresh.exists()


# ---------------------------------------------------------------------------- the command line
def test_the_cli_without_an_output_dir_obeys_the_pages_one_job_rule(tiny_qwen3, tmp_path,
                                                                     qa_jsonl, monkeypatch,
                                                                     capsys):
    """Regression (#15 finding 6): the CLI started a second job while the page's trained. With
    no --output-dir its run went to ./qwen3-finetuned, a runs folder of its own (the current
    folder); it now goes under ./runs, the page's, where the service refuses a second job."""
    from studio.cli import main
    from tests.test_service import scripted, wait_for

    monkeypatch.chdir(tmp_path)
    page = Service("runs")
    job = page.start(scripted(tiny_qwen3, qa_jsonl, "runs/page", max_steps=400), "runs/page",
                     in_process=True)
    wait_for(lambda: job.status.state == "running", what="the page's job")
    code = main(["train", "--backend", "scripted", "--model", tiny_qwen3, "--data",
                 str(qa_jsonl), "--max-steps", "2"])
    err = capsys.readouterr().err
    job.stop()
    assert code != 0 and "already training" in err and "page" in err, err
    assert [p.name for p in Path("runs").iterdir() if p.name != "uploads"] == ["page"]
    assert not Path("qwen3-finetuned").exists()
    job.wait(30)


@pytest.mark.parametrize("model, said", [("file", "is a file, not a model folder"),
                                         ("missing", "no such model folder")])
def test_cli_model_errors_say_what_the_path_is(tmp_path, qa_jsonl, capsys, model, said):
    """Regression (#15 finding 11): a file given as the model, or a folder that is not there,
    gave raw transformers messages (the folder as a bad repo id); train and generate now say
    what the path is, on one error line."""
    from studio.cli import main

    path = str(qa_jsonl) if model == "file" else str(tmp_path / "models" / "no" / "such")
    for argv in (["train", "--model", path, "--data", str(qa_jsonl), "--output-dir",
                  str(tmp_path / "runs" / "a")],
                 ["generate", "--run", path, "--prompt", "hi"]):
        code = main(argv)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1 and said in errors[0], err
        assert "Traceback" not in err


def test_an_analysis_stops_at_its_time_budget_and_says_so(tiny_qwen3, tmp_path, monkeypatch):
    """Rows with huge cells cannot keep the Data tab busy for minutes: the analysis reports on
    the rows read within ANALYSIS_SECONDS (made tiny here) and keeps none of them for a run."""
    from studio.data import analysis

    monkeypatch.setattr(analysis, "ANALYSIS_SECONDS", 1e-6)
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"q{i}", "response": f"a{i}"}
                                              for i in range(20)])
    a = analysis.Analyses(tmp_path / "up").analyse(FineTuningConfig(
        model_name=tiny_qwen3, data_path=str(data), max_seq_length=64, val_size=0))
    assert a.report.rows_read == 1 and a.sampled == (1, 20) and a.prepared is None
    assert "analysed the first 1 of 20 rows within 0 s (a run prepares them all)" in \
        a.report.summary()


@pytest.mark.slow
def test_the_page_refuses_an_upload_over_max_file_size(tmp_path):
    """Regression (#15 finding 5): 200 MB uploads were accepted and copied again. Served with
    --max-file-size 2kb, a 3 KB upload is refused by Gradio and a small one kept (moved)."""
    from gradio_client import Client, handle_file

    from tests.servers import start_page

    runs = tmp_path / "runs"
    server = start_page(runs, "--max-file-size", "2kb")
    try:
        client = Client(server.url, verbose=False)
        big = write_jsonl(tmp_path / "big.jsonl", [{"instruction": "q" * 100, "response": "a"}] * 30)
        with pytest.raises(Exception, match="(?i)size|large|exceed"):
            client.predict(handle_file(str(big)), api_name="/upload_data")
        small = write_jsonl(tmp_path / "small.jsonl", [{"instruction": "q", "response": "a"}])
        kept = client.predict(handle_file(str(small)), api_name="/upload_data")[0]
        assert Path(kept).parent == (runs / "uploads").resolve()
    finally:
        server.stop()
