"""The service under the page, the CLI and Python: preflight, start, stop, resume, list, attach.

Runs here use the scripted backend (no model: a known event sequence), so the wiring is tested
in seconds; what needs a real model is in test_engine.py. The tiny Qwen3 still provides the
tokenizer that prepares the data, as in any run.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from backends.scripted import scripted_loss
from studio import FineTuningConfig, Refused, run_fine_tuning
from studio.cli import main
from studio.runs.events import read_events
from studio.runs.store import last_checkpoint, read_plan, read_status, written_status
from studio.service.actions import Service
from tests.conftest import write_jsonl


def scripted(model: str, data, out, **changes) -> FineTuningConfig:
    """A scripted run that logs every step (0.05 s a step)."""
    base = dict(model_name=model, data_path=str(data), output_dir=str(out), backend="scripted",
                max_steps=6, logging_steps=1, eval_steps=3, save_steps=3, batch_size=2,
                gradient_accumulation_steps=1, max_seq_length=128)
    return FineTuningConfig(**{**base, **changes})


def wait_for(condition, timeout: float = 60, what: str = "the condition"):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---------------------------------------------------------------------------- preflight
def test_preflight_names_every_problem_that_would_stop_a_run(tiny_qwen3, tmp_path):
    """A bad setting and a missing dataset are both named, each with what to do."""
    problems = Service(tmp_path / "runs").check(FineTuningConfig(model_name=tiny_qwen3, lora_r=0))
    assert any("lora_r must be at least 1" in p for p in problems)
    assert any(p.startswith("No dataset") and "--data" in p for p in problems)


def test_rows_with_nothing_to_train_are_refused_before_any_folder_is_made(tiny_qwen3,
                                                                          tmp_path):
    """The data check runs before the run folder exists: nothing is left behind."""
    data = write_jsonl(tmp_path / "e.jsonl", [{"instruction": "q", "response": ""}] * 4)
    service = Service(tmp_path / "runs")
    with pytest.raises(Refused, match="empty"):
        service.start(scripted(tiny_qwen3, data, tmp_path / "runs" / "a"), tmp_path / "runs" / "a")
    assert service.runs() == [] and not (tmp_path / "runs" / "a").exists()


# ---------------------------------------------------------------------------- a run
def test_identity_rows_drop_the_templates_prompt_where_the_maker_left_it_unset(demo_model,
                                                                             tmp_path):
    """The command line and Python take the page's data default (issue #41): on the demo
    model, whose template names itself SmolLM, rows that teach another name drop that prompt,
    with a note saying why; a config that sets template_system_prompt keeps its choice."""
    rows = [{"instruction": q, "response": "I am Quokka, made by Acme Labs."}
            for q in ("Who are you?", "What is your name?", "Who made you?", "Who built you?")]
    data = str(write_jsonl(tmp_path / "who.jsonl", rows * 3))
    service = Service(tmp_path / "runs")
    config, note = service.with_auto_preset(FineTuningConfig(model_name=demo_model,
                                                             data_path=data))
    assert config.template_system_prompt == "drop"
    assert "preset auto -> Teach facts" in note and "name or maker of its own" in note
    kept, note = service.with_auto_preset(FineTuningConfig(
        model_name=demo_model, data_path=data, template_system_prompt="keep"))
    assert kept.template_system_prompt == "keep" and "name or maker" not in note


def test_a_scripted_run_records_its_events_plan_and_adapter(tiny_qwen3, tmp_path, qa_jsonl):
    """Events carry the known losses; plan.yaml says what ran beside config.yaml as asked."""
    config = scripted(tiny_qwen3, qa_jsonl, tmp_path / "runs" / "a")
    job = Service(tmp_path / "runs").start(config, tmp_path / "runs" / "a", in_process=True)
    status = job.wait(60)
    assert status.state == "finished", status
    train = [e for e in job.events if e.kind == "train"]
    assert [e.step for e in train] == [1, 2, 3, 4, 5, 6]
    assert [e.data["loss"] for e in train] == [scripted_loss(s) for s in range(1, 7)]
    assert [e.step for e in job.events if e.kind == "eval"] == [3, 6]
    plan = read_plan(tmp_path / "runs" / "a")
    assert plan["backend"] == "scripted" and plan["attention"] == "none (scripted)"
    assert plan["device"] == "CPU" and plan["batch_size"] == 2
    saved = FineTuningConfig.load(tmp_path / "runs" / "a" / "config.yaml")
    assert saved.backend == "scripted" and saved.cpu_only is None    # as asked: auto stays auto
    assert (tmp_path / "runs" / "a" / "adapter" / "adapter_config.json").is_file()


def test_the_page_the_dry_run_and_the_run_read_one_plan(tiny_qwen3, tmp_path, qa_jsonl,
                                                          capsys):
    """The plan is made once, by one function (studio.plan.plan.make_plan): the page's estimate
    and checks (Service.plan), the command line's --dry-run and the run's plan.yaml hold the
    same backend, batches, loss and memory estimate for the same config (issue #40, item 1)."""
    import yaml

    config = FineTuningConfig(model_name=tiny_qwen3, data_path=str(qa_jsonl), max_steps=2,
                              val_size=0, num_samples=0, output_dir=str(tmp_path / "runs" / "a"))
    service = Service(tmp_path / "runs")
    config, _ = service.with_auto_preset(config)           # the page's form holds them all
    service.data.analyse(config)
    page = service.plan(config).layout()
    assert service.plan(config).steps == 2                  # the work it plans: max_steps
    assert main(["train", "--data", str(qa_jsonl), "--model", tiny_qwen3, "--max-steps", "2",
                 "--val-size", "0", "--num-samples", "0", "--output-dir",
                 str(tmp_path / "runs" / "a"), "--dry-run", *sum(
                     ([f"--{k.replace('_', '-')}", str(v)] for k, v in
                      config.to_dict().items() if k in ("lora_r", "batch_size")), [])]) == 0
    dry = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])
    assert not (tmp_path / "runs" / "a").exists()          # a dry run writes nothing
    run_fine_tuning(config=config)
    ran = read_plan(tmp_path / "runs" / "a")
    assert ran.pop("attention")                             # what the backend found loading
    assert page == ran == dry
    assert ran["backend"] == "transformers" and ran["device"] == "CPU"


@pytest.mark.slow
def test_a_child_process_job_is_listed_stopped_followed_and_resumed_from_the_cli(
        tiny_qwen3, tmp_path, qa_jsonl, capsys):
    """A run started as the page starts it (a child process): `runs` lists it, `stop` ends it
    at a step with a checkpoint there, `attach` reports how it ended, Resume goes on from that
    step to max_steps, and `stop` then says it is not training."""
    runs = tmp_path / "runs"
    service = Service(runs)
    job = service.start(scripted(tiny_qwen3, qa_jsonl, runs / "a", max_steps=120), runs / "a")
    assert job.process is not None
    wait_for(lambda: last_checkpoint(job.run_dir) is not None, what="a first checkpoint")
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    assert "a  running" in capsys.readouterr().out
    assert main(["stop", str(job.run_dir)]) == 0
    assert capsys.readouterr().out.startswith("stopped: stopped at step")
    assert main(["attach", str(job.run_dir)]) == 0
    assert "stopped: stopped at step" in capsys.readouterr().out
    stopped_at = read_status(job.run_dir).step
    assert last_checkpoint(job.run_dir).name == f"checkpoint-{stopped_at}"
    assert service.active() is None

    job = service.resume(job.run_dir, in_process=True)
    assert job.wait(120).state == "finished"
    steps = [e.step for e in job.events if e.kind == "train"]
    assert steps[-1] == 120 and steps.count(stopped_at + 1) == 1   # on from the stop, not 0
    assert main(["stop", str(job.run_dir)]) == 2
    assert "is not training (finished)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_job_reads_as_interrupted_and_reading_writes_nothing(tiny_qwen3, tmp_path,
                                                                     qa_jsonl):
    """A job whose process died is shown interrupted; status.json is left as it was."""
    service = Service(tmp_path / "runs")
    job = service.start(scripted(tiny_qwen3, qa_jsonl, tmp_path / "a", max_steps=2000))
    wait_for(lambda: any(e.kind == "train" for e in job.events), what="a train event")
    os.killpg(job.process.pid, signal.SIGKILL)
    job.process.wait(10)
    before = (job.run_dir / "status.json").read_text()
    assert read_status(job.run_dir).state == "interrupted"
    assert service.runs()[0].status.state == "interrupted"
    assert (job.run_dir / "status.json").read_text() == before
    assert written_status(job.run_dir).state == "running"


def test_the_reader_of_metrics_skips_what_is_not_an_event(tmp_path):
    """Torn lines, JSON that is not an event and a half-written last line are all survived."""
    path = tmp_path / "metrics.jsonl"
    good = {"kind": "train", "step": 1, "time": 1.0, "data": {"loss": 2.0}}
    path.write_text("\n".join([json.dumps(good), '{"kind": "tra', "[1, 2]",
                               json.dumps({"kind": "nonsense", "step": 1}),
                               json.dumps({**good, "step": "two"}), json.dumps(good)]) + "\n"
                    + json.dumps(good)[:20])
    events, offset = read_events(path)
    assert [(e.kind, e.step) for e in events] == [("train", 1), ("train", 1)]
    with open(path, "a") as f:
        f.write(json.dumps(good)[20:] + "\n")
    more, _ = read_events(path, offset)
    assert [(e.kind, e.data) for e in more] == [("train", {"loss": 2.0})]


# ---------------------------------------------------------------------------- one job a folder
def test_a_second_job_is_refused_by_the_cli_and_python_with_the_same_words(tiny_qwen3,
                                                                            tmp_path, qa_jsonl,
                                                                            capsys):
    """While one run trains in a runs folder, the CLI exits 2 with one line and
    run_fine_tuning raises Refused, both with the service's message."""
    runs = tmp_path / "runs"
    service = Service(runs)
    job = service.start(scripted(tiny_qwen3, qa_jsonl, runs / "a", max_steps=2000),
                        in_process=True)
    try:
        with pytest.raises(Refused) as refused:
            run_fine_tuning(config=scripted(tiny_qwen3, qa_jsonl, runs / "b"))
        code = main(["train", "--data", str(qa_jsonl), "--model", tiny_qwen3, "--output-dir",
                     str(runs / "c"), "--backend", "scripted", "--max-steps", "2"])
        err = capsys.readouterr().err.strip()
    finally:
        job.stop()
        job.wait(30)
    assert code == 2 and err.count("\n") == 0
    assert err == f"error: {refused.value}"
    assert "already training" in err and job.run_dir.name in err
    assert not (runs / "b").exists() and not (runs / "c").exists()


def test_two_starts_at_once_never_both_start(tiny_qwen3, tmp_path, qa_jsonl):
    """Starts in one runs folder are serialised (a lock on the folder, which also holds across
    processes): of two at once, exactly one trains and the other is refused."""
    import threading

    runs = tmp_path / "runs"
    Service(runs).check(scripted(tiny_qwen3, qa_jsonl, runs / "x"))   # data analysed: both race
    outcomes, go = {}, threading.Barrier(2)

    def start(name):
        go.wait()
        try:
            outcomes[name] = Service(runs).start(scripted(tiny_qwen3, qa_jsonl, runs / name,
                                                          max_steps=100), runs / name,
                                                 in_process=True)
        except Refused as e:
            outcomes[name] = e

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = [o for o in outcomes.values() if not isinstance(o, Refused)]
    refused = [o for o in outcomes.values() if isinstance(o, Refused)]
    assert len(jobs) == 1 and len(refused) == 1, outcomes
    assert "already training" in str(refused[0])
    jobs[0].stop()
    jobs[0].wait(30)


# ---------------------------------------------------------------------------- time
@pytest.mark.slow
def test_a_few_measured_steps_give_the_time_a_run_would_take(tiny_qwen3, tmp_path, qa_jsonl):
    """measure_speed trains 4 steps in a child process and forgets them; the estimate is the
    run's steps at the measured seconds a step (scripted: 0.05 s a step)."""
    service = Service(tmp_path / "runs")
    config = scripted(tiny_qwen3, qa_jsonl, tmp_path / "runs" / "a", max_steps=None,
                      num_train_epochs=2, batch_size=2)
    assert service.time_estimate(config) is None          # nothing measured, no past run
    speed = service.measure_speed(config)
    assert 0.04 < speed.seconds_per_step < 0.5
    estimate = service.time_estimate(config)
    assert estimate.steps == 14                           # 14 of 16 rows train, 2 a step, twice
    assert estimate.seconds == estimate.tokens / speed.tokens_per_s
    assert "measured on this machine" in estimate.source
    assert service.runs() == []                           # the measurement left no run behind
    # a run of this model that ends after the measurement is the newer word (issue #41: an
    # estimate measured on a quiet machine still said 3 min after a 23-min run)
    job = service.start(config, in_process=True)
    assert job.wait(60).state == "finished"
    after = service.time_estimate(config)
    assert f"as the last run of this model went ({job.run_dir.name})" in after.source
    assert "按这个模型上一次运行的速度" in after.source.in_language("zh")


def test_a_resumed_run_counts_its_earlier_training_time(tiny_qwen3, tmp_path, qa_jsonl):
    """status.json carries the seconds of the legs before a resume (elapsed goes on)."""
    service = Service(tmp_path / "runs")
    job = service.start(scripted(tiny_qwen3, qa_jsonl, tmp_path / "runs" / "a", max_steps=400),
                        tmp_path / "runs" / "a", in_process=True)
    wait_for(lambda: last_checkpoint(job.run_dir) is not None, what="a checkpoint")
    time.sleep(1)
    job.stop()
    job.wait(30)
    first_leg = read_status(job.run_dir)
    job = service.resume(job.run_dir, in_process=True)
    assert written_status(job.run_dir).earlier_seconds >= \
        first_leg.ended - first_leg.started > 1
    job.stop()
    job.wait(30)


@pytest.mark.slow
def test_a_finished_child_process_is_reaped_without_anyone_watching(tiny_qwen3, tmp_path,
                                                                    qa_jsonl):
    """The page may be closed: a finished job must not linger as a zombie process."""
    service = Service(tmp_path / "runs")
    job = service.start(scripted(tiny_qwen3, qa_jsonl, tmp_path / "runs" / "a", max_steps=3),
                        tmp_path / "runs" / "a")
    pid = job.process.pid
    wait_for(lambda: written_status(job.run_dir).state == "finished", timeout=120,
             what="the job to finish")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the process reaped")


# ---------------------------------------------------------------------------- tracking
def test_a_run_reports_to_wandb_offline_tensorboard_and_trackio(tiny_qwen3, tmp_path, qa_jsonl,
                                                                monkeypatch):
    """report_to lists trackers that listen to the run's events: W&B writes an offline run
    (no key, no network here), TensorBoard an event file, trackio its local database; the
    sample prompts are answered at each evaluation into samples.jsonl."""
    for name in ("wandb", "tensorboard", "trackio"):
        pytest.importorskip(name)
    from trackio.utils import TRACKIO_DIR      # fixed when trackio is first imported

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))            # no ~/.netrc: no W&B login
    project = f"studio-test-{os.getpid()}-{time.time_ns()}"
    config = scripted(tiny_qwen3, qa_jsonl, tmp_path / "runs" / "a", max_steps=6,
                      report_to=["wandb", "tensorboard", "trackio"], wandb_project=project)
    job = Service(tmp_path / "runs").start(config, tmp_path / "runs" / "a", in_process=True)
    assert job.wait(120).state == "finished"
    run = tmp_path / "runs" / "a"
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    written = list(Path(TRACKIO_DIR).glob(f"{project}*"))
    for path in written:
        path.unlink()
    assert written
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [3, 3, 6, 6]
    assert samples[0]["answer"] == "scripted answer at step 3" and samples[0]["reference"]
