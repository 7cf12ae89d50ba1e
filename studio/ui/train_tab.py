"""Train tab: start, watch and stop a run; browse every past run.

Start, Resume and Stop go through studio.service.actions, which refuses what the command line and the
Python API refuse, with the same words. The job runs as a child process that writes its events
to the run folder (studio.runs.store), so the page is only a viewer: a gr.Timer polls
`Job.events_since(cursor)` with the byte cursor kept in gr.State and draws only what is new. The timer is switched on at Start (or when the page opens
on a live run) and off once the run has ended, so a reload, a second tab or a restarted server
shows the same run with its whole curve.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.runs.store import (ACTIVE, Status, log_size, read_config, read_log, resumable,
                               run_events)
from studio.service.actions import Refused, Service
from studio.ui.common import chart_layout, empty_chart, guard, note, run_choices, shout, toast
from studio.ui.form import ConfigForm
from studio.ui.i18n import T, engine, error_text, recorded, say, state_word

POLL_SECONDS = 2.0
LOOKOUT_SECONDS = 10.0
LOG_TAIL_BYTES = 12_000


@dataclass
class TrainTab:
    start: gr.Button
    stop: gr.Button
    resume: gr.Button
    force: gr.Checkbox
    run: gr.Dropdown
    status: gr.HTML
    progress: gr.HTML
    plan: gr.HTML         # what the backend decided to run, beside the config as asked for
    chart: gr.Plot
    samples: gr.HTML      # the sample prompts' answers at the last evaluations
    log: gr.HTML
    watch: gr.State
    timer: gr.Timer       # polls the watched run; on while it trains
    lookout: gr.Timer     # notices a run started elsewhere (another tab, the API, the CLI)


# ---------------------------------------------------------------------------- layout
def build() -> TrainTab:
    with gr.Row(equal_height=True):
        start = gr.Button(T("train.start"), variant="primary", scale=2, elem_id="start")
        stop = gr.Button(T("train.stop"), variant="stop", scale=1, elem_id="stop")
        resume = gr.Button(T("train.resume"), scale=1, visible=False, elem_id="resume")
        force = gr.Checkbox(False, label=T("train.force"), scale=2, container=False)
    with gr.Row(equal_height=True):
        run = gr.Dropdown([], label=T("train.run"), scale=5, elem_id="run-picker")
    status = gr.HTML("", elem_id="train-status")     # drawn on page load, in its language
    progress = gr.HTML("", elem_id="train-progress")
    with gr.Accordion(T("train.plan"), open=False):
        plan = gr.HTML("", elem_id="train-plan")
    chart = gr.Plot(None, show_label=False, elem_id="loss-chart")   # drawn on page load
    with gr.Accordion(T("train.samples"), open=True):
        samples = gr.HTML("", elem_id="train-samples")
    with gr.Accordion(T("train.log"), open=True):
        log = gr.HTML("", elem_id="train-log")
    watch = gr.State({})
    timer = gr.Timer(POLL_SECONDS, active=False)
    lookout = gr.Timer(LOOKOUT_SECONDS)
    return TrainTab(start, stop, resume, force, run, status, progress, plan, chart, samples, log,
                    watch, timer, lookout)


# ---------------------------------------------------------------------------- reading a run
def new_watch(run_dir) -> dict:
    return {"run": str(run_dir), "cursor": 0, "train": [], "eval": [], "last": {},
            "first": None, "max_steps": None, "message": "", "done": None, "state": None,
            "plan": {}, "samples": {}, "peak": None}


def absorb(watch: dict, events) -> bool:
    """Fold new events into the watch; True when the chart has new points."""
    new_points = False
    for e in events:
        d = e.data
        if e.kind != "done" and watch["done"]:
            watch["done"] = None               # resumed after an end: a new leg begins
        if e.kind == "train":
            watch["train"].append([e.step, d.get("loss"), d.get("learning_rate")])
            watch["last"] = {**d, "step": e.step, "time": e.time}
            if isinstance(d.get("peak_memory_gb"), (int, float)):     # a resumed leg starts low
                watch["peak"] = max(watch["peak"] or 0, d["peak_memory_gb"])
            if not watch["first"] or e.step < watch["first"][1]:
                watch["first"] = [e.time, e.step]
            new_points = True
        elif e.kind == "eval":
            watch["eval"].append([e.step, d.get("eval_loss")])
            new_points = True
        elif e.kind == "done":
            watch["done"] = {**d, "step": e.step}
        elif e.kind == "checkpoint":
            watch["message"] = say("train.checkpoint", step=e.step)
        elif e.kind == "plan":
            watch["plan"].update(d)
        elif e.kind == "sample":
            seen = watch["samples"].setdefault(str(d.get("prompt")), {
                "reference": str(d.get("reference") or ""), "answers": []})
            seen["answers"] = (seen["answers"] + [[e.step, str(d.get("answer"))]])[-3:]
        elif d.get("message"):
            watch["message"] = str(d["message"])
        if d.get("max_steps"):
            watch["max_steps"] = int(d["max_steps"])
    return new_points


def figure(watch: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    train, evals = _thin(watch["train"]), _thin(watch["eval"])
    if not train and not evals:
        return empty_chart(say("train.chart.empty"), 360)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    steps = [p[0] for p in train]
    fig.add_trace(go.Scatter(x=steps, y=[p[1] for p in train], mode="lines+markers",
                             name=say("train.chart.loss"), marker=dict(size=7),
                             line=dict(color="#6366f1")))
    if evals:
        fig.add_trace(go.Scatter(x=[p[0] for p in evals], y=[p[1] for p in evals],
                                 mode="lines+markers", name=say("train.chart.eval"),
                                 marker=dict(size=10, symbol="diamond"),
                                 line=dict(color="#f59e0b")))
    if any(p[2] is not None for p in train):
        fig.add_trace(go.Scatter(x=steps, y=[p[2] for p in train], mode="lines+markers",
                                 name=say("train.chart.lr"), marker=dict(size=4),
                                 line=dict(color="#94a3b8", dash="dot")), secondary_y=True)
    all_steps = steps + [p[0] for p in evals]
    lo, hi = min(all_steps), max(all_steps)
    fig.update_xaxes(title_text=say("train.chart.step"),
                     range=[lo - 0.5, hi + 0.5] if hi - lo < 2 else None)
    fig.update_yaxes(title_text=say("train.chart.loss_axis"), secondary_y=False)
    # exponent notation with as many digits as the ticks need (a fixed ".1e" printed the same
    # value on every tick while the schedule had barely moved)
    fig.update_yaxes(title_text=say("train.chart.lr"), exponentformat="e", showexponent="all",
                     secondary_y=True, showgrid=False)
    return chart_layout(fig, 360, uirevision=watch["run"])


def _thin(points: list, limit: int = 2000) -> list:
    """At most about `limit` points (the last one always kept), so long runs stay light."""
    if len(points) <= limit:
        return points
    step = -(-len(points) // limit)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_html(watch: dict, status: Status) -> str:
    last, total = watch["last"], watch["max_steps"]
    step = last.get("step", 0)
    state = status.state
    pct = 100 * step / total if total else 0
    if state == "finished":
        pct = 100
    facts = [say("train.step", step=step) + (say("train.of", total=total) if total else "")]
    if last.get("loss") is not None:
        facts.append(say("train.loss", loss=last["loss"]))
    if status.started:
        facts.append(say("train.elapsed", clock=_clock(status.elapsed())))
    first = watch["first"]
    if status.active and first and total and step > first[1]:
        per_step = (last["time"] - first[0]) / (step - first[1])
        facts.append(say("train.eta", clock=_clock(per_step * (total - step))))
    if last.get("tokens_per_s"):
        facts.append(say("train.speed", speed=last["tokens_per_s"]))
    if last.get("mfu"):
        facts.append(say("train.mfu", mfu=last["mfu"]))
    if last.get("epoch") is not None:
        facts.append(say("train.epoch", epoch=last["epoch"]))
    peak, estimate = watch.get("peak"), status.estimate_gb
    if peak:
        mem = say("train.peak", peak=peak)
        if estimate:
            mem += say("train.peak.estimate", estimate=estimate, share=peak / estimate)
        facts.append(mem)
    elif estimate:
        facts.append(say("train.estimate", estimate=estimate))
    return (f'<div class="progress"><div class="progress-bar"><span style="width:{pct:.1f}%">'
            f'</span></div><div class="progress-facts">{" · ".join(facts)}</div></div>')


def status_html(watch: dict, status: Status) -> str:
    name = Path(watch["run"]).name
    state = status.state
    written = status.reason or (watch["done"] or {}).get("reason") or ""
    reason = recorded(written)
    if status.active:
        doing = recorded(watch["message"]) or say("train.starting")
        return note(say("train.training", name=name, doing=doing), "info")
    if state == "finished":
        done = note(say("train.finished", name=name, reason=reason, run=watch["run"]), "ok")
        return done + note(advice(watch["run"]), "warn")
    if state == "stopped":     # as asked: not a warning, unless it had to be killed
        return note(say("train.stopped", name=name, reason=reason),
                    "warn" if "killed" in written else "info")
    if state == "interrupted":
        resume = say("train.resume_hint" if resumable(watch["run"], status)
                     else "train.no_checkpoint")
        return note(say("train.interrupted", name=name, reason=reason, resume=resume), "warn")
    if state == "failed":
        return note(say("train.failed", name=name, reason=reason), "error")
    if state == "unreadable":      # a status.json that is not a status: the reason, as text
        return note(say("train.unreadable", name=name, reason=reason), "error")
    return note(say("train.other_state", name=name, state=state_word(state)))


# (row label's catalog key, config field or None, plan key): the config as asked for beside
# what ran
PLAN_ROWS = [("plan.backend", "backend", "backend"), ("plan.device", "cpu_only", "device"),
             ("plan.precision", "bf16", "dtype"),
             ("plan.quantisation", "load_in_4bit", "quantization"),
             ("plan.micro_batch", None, "micro_batch"),
             ("plan.batch_size", "batch_size", "batch_size"),
             ("plan.gradient_accumulation_steps", "gradient_accumulation_steps",
              "gradient_accumulation_steps"),
             ("plan.packing", "packing", "packing"),
             ("plan.gradient_checkpointing", "gradient_checkpointing", "gradient_checkpointing"),
             ("plan.fused_loss", "fused_loss", "fused_loss"),
             ("plan.whole_logits", "whole_logits", "whole_logits"),
             ("plan.layer_graphs", "layer_graphs", "layer_graphs"),
             ("plan.attention", None, "attention"),
             ("plan.lora_dropout", "lora_dropout", "lora_dropout"),
             ("plan.planner", None, "planner")]


def plan_html(run_dir: str, plan: dict) -> str:
    """The run's plan (plan.yaml, from its plan events) as a table beside its config.yaml."""
    if not plan:
        return note(say("plan.none"))
    try:
        asked = read_config(run_dir)
    except Exception:   # noqa: BLE001 - the plan is still worth showing
        asked = None
    rows = []
    for label, field, key in PLAN_ROWS:
        if key not in plan:
            continue
        wanted = getattr(asked, field) if asked is not None and field else None
        wanted = "—" if field is None else say("choice.auto") if wanted is None else \
            _shown(wanted)
        rows.append(f"<tr><td>{html.escape(say(label))}</td><td>{html.escape(wanted)}</td>"
                    f"<td><b>{html.escape(_shown(plan[key]))}</b></td></tr>")
    head = "".join(f"<th>{html.escape(say(key))}</th>"
                   for key in ("plan.setting", "plan.asked", "plan.ran"))
    return f'<table class="plan"><tr>{head}</tr>' + "".join(rows) + "</table>"


def _shown(value) -> str:
    return say("choice.on" if value else "choice.off") if isinstance(value, bool) else \
        recorded(str(value))


def advice(run_dir: str) -> str:
    """What to change when the finished run's validation loss says it did not learn ('')."""
    from studio.evaluate.advice import advice_after
    from studio.evaluate.report import latest_report

    try:
        config = read_config(run_dir)
    except Exception:   # noqa: BLE001 - no advice without the config
        return ""
    try:
        report = latest_report(run_dir)
    except ValueError:      # the Evaluate tab says what is wrong with it; the advice goes on
        report = None
    return engine(advice_after(config, run_events(run_dir)[0], report) or "")


def log_tail(run_dir: str) -> str:
    return read_log(run_dir, LOG_TAIL_BYTES)


def log_html(text: str) -> str:
    """The log in a box that stays scrolled to its newest line (column-reverse keeps the
    scroll position at the bottom as lines arrive)."""
    body = html.escape(text) if text else html.escape(say("train.log.empty"))
    return f'<div class="log-box"><pre>{body}</pre></div>'


# ---------------------------------------------------------------------------- handlers
def poll(service: Service, watch: dict, force_chart: bool = False) -> list:
    """Outputs for the watched run after reading what it wrote since the cursor."""
    if not watch or not watch.get("run"):
        return only(watch=watch, timer=gr.Timer(active=False))
    job = service.attach(watch["run"])
    status = job.status                  # first: once it is final, every event is on disk
    events, watch["cursor"] = job.events_since(watch["cursor"])
    planned = dict(watch["plan"])
    new_points = absorb(watch, events)
    running, state_changed = status.active, status.state != watch["state"]
    watch["state"] = status.state
    may_resume = resumable(watch["run"], status)
    # A tick that brought nothing new sends nothing: on a 2-core machine the browser redrawing
    # an unchanged page every second took a quarter of the training's speed.
    changed = bool(events) or state_changed or force_chart
    size = log_size(watch["run"])
    log_grew = size != watch.get("log_size")
    watch["log_size"] = size
    return [watch,
            status_html(watch, status) if changed else gr.skip(),
            progress_html(watch, status) if changed else gr.skip(),
            plan_html(watch["run"], watch["plan"]) if force_chart or watch["plan"] != planned
            else gr.skip(),
            figure(watch) if new_points or force_chart else gr.skip(),
            samples_html(watch) if force_chart or any(e.kind == "sample" for e in events)
            else gr.skip(),
            log_html(log_tail(watch["run"])) if log_grew or force_chart else gr.skip(),
            gr.Timer(active=running) if state_changed or force_chart else gr.skip(),
            # nothing else can start while a run trains: no need to look out for one then
            gr.Timer(active=not running) if state_changed or force_chart else gr.skip(),
            gr.update(visible=may_resume) if state_changed or force_chart else gr.skip(),
            gr.update(choices=run_choices(service), value=watch["run"])
            if state_changed or force_chart else gr.skip(),
            # one job at a time: Start is off while any run trains (this one or another)
            gr.update(interactive=service.active() is None)
            if state_changed or force_chart else gr.skip()]


def samples_html(watch: dict) -> str:
    """The sample prompts beside their reference and their answers at the last evaluations,
    newest first: the answers changing is the learning, in words."""
    if not watch["samples"]:
        return note(say("train.samples.empty"))
    head = "".join(f"<th>{html.escape(say(k))}</th>" for k in
                   ("train.samples.prompt", "train.samples.reference", "train.samples.answers"))
    rows = []
    for prompt, seen in watch["samples"].items():
        answers = "".join(f'<div class="sample"><i>{html.escape(say("train.samples.at", step=step))}'
                          f"</i> {html.escape(answer)}</div>"
                          for step, answer in reversed(seen["answers"]))
        rows.append(f"<tr><td>{html.escape(prompt)}</td><td>{html.escape(seen['reference'])}"
                    f"</td><td>{answers}</td></tr>")
    return f'<table class="plan samples"><tr>{head}</tr>{"".join(rows)}</table>'


# what the Train tab's handlers answer, in this order
OUTPUTS = ("watch", "status", "progress", "plan", "chart", "samples", "log", "timer", "lookout",
           "resume", "run", "start")


def outputs(t: TrainTab) -> list:
    return [getattr(t, name) for name in OUTPUTS]


def only(**values) -> list:
    """An answer that sets the named outputs and leaves the others as they are: a list written
    by hand once missed one, and the first page ever opened showed an Error."""
    return [values.get(name, gr.skip()) for name in OUTPUTS]


def wire(t: TrainTab, form: ConfigForm, service: Service) -> None:
    out = outputs(t)

    @guard
    def start(*values):
        config, _ = form.to_config(*values[:-1])
        try:
            job = service.start(config, allow_over_memory=bool(values[-1]))
        except Refused as e:
            return only(status=shout(error_text(e)))
        toast(say("train.started", name=job.run_dir.name))
        return poll(service, new_watch(job.run_dir), force_chart=True)

    @guard
    def stop(watch):
        if not watch or not watch.get("run") or watch.get("state") not in ACTIVE:
            running = service.active()
            if not running:
                return shout(say("train.nothing"), "warn")
            watch = new_watch(running)
        service.stop(watch["run"])
        return note(say("train.stopping"), "warn")

    @guard
    def resume(watch):
        try:
            job = service.resume(watch["run"])
        except Refused as e:
            return only(status=shout(error_text(e)))
        toast(say("train.resuming", name=job.run_dir.name))
        w = new_watch(job.run_dir)
        return poll(service, w, force_chart=True)

    @guard
    def show(run_dir):
        if not run_dir:
            return only()
        return poll(service, new_watch(run_dir), force_chart=True)

    t.start.click(start, form.inputs + [t.force], out, api_name="start")
    t.stop.click(stop, t.watch, t.status, api_name="stop")
    t.resume.click(resume, t.watch, out, api_name="resume")
    t.run.input(show, t.run, out, api_name=False)

    def tick(watch):
        try:
            return poll(service, watch)
        except Exception:   # noqa: BLE001 - a half-written file: try again at the next tick
            return only(watch=watch)

    t.timer.tick(tick, t.watch, out, api_name=False, concurrency_limit=None,
                 show_progress="hidden")

    def look(watch):
        """A page left on an ended run follows a run started elsewhere."""
        running = service.active()
        if running is None or (watch and watch.get("state") in ACTIVE) or \
                (watch and watch.get("run") == str(running)):
            return only()
        return poll(service, new_watch(running), force_chart=True)

    t.lookout.tick(look, t.watch, out, api_name=False, concurrency_limit=None,
                   show_progress="hidden")


def attach(service: Service) -> list:
    """Page load: watch the live run if there is one (a reload or second tab reattaches),
    else show the latest run as it ended (a dead job shows as interrupted)."""
    run = service.latest()
    if run is None:
        return only(watch={}, chart=empty_chart(say("train.chart.empty"), 360),
                    timer=gr.Timer(active=False), run=gr.update(choices=[]))
    return poll(service, new_watch(run), force_chart=True)
