"""Model and hardware tab: what this machine has, which model and backend, every setting.

The settings are drawn from FineTuningConfig (grouped as its metadata says, with its help), with
presets on top. Beside them: the memory estimate against what is free, the checks that would
stop a run, the equivalent command line, the config as a YAML file, and a past run's config to
load back into the form.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.models.catalog import CATALOG, hub_cache_has, is_local_model
from studio.models.shapes import parameter_count
from studio.config import GROUPS, FineTuningConfig
from studio.models.local import model_problem
from studio.service.actions import GiB, Refused, Service
from studio.ui.common import guard, md, note, run_choices, shout, toast
from studio.data.identity import drop_template_system
from studio.plan.presets import AUTO, PRESETS, apply_preset, choose_preset
from studio.ui.form import FIELDS, ConfigForm, command_line
from studio.ui.i18n import (T, engine, error_text, group_title, preset_name,
                             preset_purpose, say)


@dataclass
class ModelTab:
    hardware: gr.Markdown
    backends: gr.Markdown
    model: gr.Dropdown
    model_info: gr.Markdown
    folder: gr.Textbox
    use_folder: gr.Button
    preset: gr.Radio
    preset_why: gr.Markdown   # what the chosen preset is for, and why Auto chose it
    memory: gr.HTML
    time: gr.HTML             # how long it would train, from measured steps or a past run
    measure: gr.Button
    checks: gr.HTML
    cli: gr.Code
    save_yaml: gr.Button
    yaml_file: gr.File
    load_yaml: gr.UploadButton
    past_run: gr.Dropdown
    load_run: gr.Button


def model_choices(current: str) -> list[tuple[str, str]]:
    out = []
    for m in CATALOG:
        where = "" if m.id.startswith("demo:") else \
            say("model.where.downloaded") if hub_cache_has(m.id) else say("model.where.hub")
        out.append((f"{m.id}  ·  {engine(m.note)}{where}", m.id))
    if current and current not in [v for _, v in out]:
        out.insert(0, (say("model.where.local", path=current), current))
    return out


# ---------------------------------------------------------------------------- layout
def build(form: ConfigForm) -> ModelTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=6, min_width=420):
            gr.Markdown(T("model.h.model"))
            current = form.defaults.model_name
            model = gr.Dropdown(model_choices(current), value=current, allow_custom_value=True,
                                label=T("model.name"), info=T("model.name.info"),
                                elem_id="model-name")
            form.adopt("model_name", model)
            model_info = gr.Markdown("", elem_id="model-info")
            with gr.Row(equal_height=True):
                folder = gr.Textbox(label=T("model.folder"),
                                    placeholder=T("model.folder.placeholder"), scale=5,
                                    elem_id="model-folder")
                use_folder = gr.Button(T("model.use_folder"), scale=1, min_width=90,
                                       elem_id="use-folder")
            form.render(["backend"])
            form.adopt("output_dir", gr.State(form.defaults.output_dir))
            backends = gr.Markdown("")
            gr.Markdown(T("model.h.settings"))
            preset_radio = gr.Radio([(T(f"preset.{name}"), name) for name in [AUTO, *PRESETS]],
                                    value=AUTO, label=T("model.preset"),
                                    info=T("model.preset.info"), elem_id="preset")
            # drawn again on page load, in the page's language
            preset_why = gr.Markdown(why_text(AUTO, *choose_preset(None)), elem_id="preset-why")
            for group in GROUPS[1:]:
                with gr.Accordion(group_title(group), open=group in ("LoRA", "Optimisation")):
                    with gr.Row():
                        form.render_group(group, min_width=190)
            leftover = [n for n in FIELDS if n not in form.widgets]
            if leftover:     # a field no tab placed still gets a widget
                with gr.Accordion(T("model.more"), open=False), gr.Row():
                    form.render(leftover, min_width=190)
        with gr.Column(scale=4, min_width=340):
            gr.Markdown(T("model.h.machine"))
            hardware = gr.Markdown("", elem_id="hardware")   # drawn on page load
            gr.Markdown(T("model.h.memory"))
            memory = gr.HTML("", elem_id="memory-estimate")
            gr.Markdown(T("model.h.time"))
            time_box = gr.HTML("", elem_id="time-estimate")
            measure = gr.Button(T("model.measure"), size="sm", elem_id="measure")
            gr.Markdown(T("model.h.checks"))
            checks = gr.HTML("", elem_id="config-checks")
            gr.Markdown(T("model.h.cli"))
            cli = gr.Code("", language="shell", buttons=["copy"], wrap_lines=True,
                          show_label=False, elem_id="cli-command", interactive=False)
            gr.Markdown(T("model.h.config"))
            with gr.Row(equal_height=True):
                save_yaml = gr.Button(T("model.save_yaml"), size="sm")
                load_yaml = gr.UploadButton(T("model.load_yaml"), file_types=[".yaml", ".yml"],
                                            size="sm")
            yaml_file = gr.File(label="config.yaml", visible=False, interactive=False)
            with gr.Row(equal_height=True):
                past_run = gr.Dropdown([], label=T("model.past_run"), scale=4,
                                       elem_id="past-run")
                load_run = gr.Button(T("model.load_run"), scale=1, min_width=110, size="sm",
                                     elem_id="load-run")
    return ModelTab(hardware, backends, model, model_info, folder, use_folder, preset_radio,
                    preset_why, memory, time_box, measure, checks, cli, save_yaml, yaml_file, load_yaml, past_run, load_run)


# ---------------------------------------------------------------------------- handlers
def hardware_text(service: Service) -> tuple[str, str]:
    """(what was detected, which backends can run here and why not)."""
    from backends import availability
    from studio.plan.plan import backend_for

    hw = service.hardware()
    lines = [say("hw.gpu", index=g.index, name=g.name, total=g.total_bytes / GiB,
                 free=g.free_bytes / GiB, major=g.capability[0], minor=g.capability[1])
             for g in hw.gpus]
    if not hw.gpus:
        # the precision a run left to auto takes on this CPU, as the checks and the plan say
        lines.append(say("hw.no_gpu", precision="bfloat16" if hw.cpu_bf16 else "float32"))
    if hw.apple_silicon:
        lines.append(say("hw.apple"))
    lines.append(say("hw.cpu", name=hw.cpu_name, cores=hw.cpu_cores))
    lines.append(say("hw.ram", total=hw.ram_bytes / GiB, free=hw.ram_free_bytes / GiB))
    lines.append(say("hw.extras",
                     bnb=say("hw.available" if hw.bitsandbytes else "hw.not_installed"),
                     wandb=say("hw.installed" if hw.wandb else "hw.not_installed")))
    rows = [say("hw.table"), "|---|---|"]
    for name, why in availability(hw).items():
        usable = say("hw.usable") if why is None else say("hw.not_usable", why=engine(why))
        rows.append(f"| {name} | {usable} |")
    try:
        _, reason = backend_for(FineTuningConfig().resolve(hw), hw)
        rows.append(say("hw.auto", reason=engine(reason)))
    except Exception as e:   # noqa: BLE001
        rows.append(say("hw.auto_fails", error=error_text(e)))
    return "\n".join(lines), "\n".join(rows)


def describe_model(name: str) -> str:
    if not name:
        return note(say("model.pick"), "warn")
    params = parameter_count(name)
    size = (say("model.size.unknown") if not params else
            say("model.size.billions", n=params / 1e9) if params >= 1e8 else
            say("model.size.millions", n=params / 1e6))
    origin = say("model.origin.bundled" if name.startswith("demo:") else
                 "model.origin.local" if is_local_model(name) else
                 "model.origin.cache" if hub_cache_has(name) else "model.origin.hub")
    text = f"**{md(name)}** · {size} · {origin}"
    why = model_problem(name)
    return text + (say("model.cannot_load", why=md(why)) if why else "")


def last_measured(service: Service, model_name: str) -> str:
    """The newest run of this model that logged a step: its measured peak (the highest any step
    logged, over every leg of a resumed run, as the Train tab and the Runs table say) beside its
    estimate."""
    for run in service.runs():
        try:
            if service.run_config(run.run_dir).model_name != model_name:
                continue
        except Exception:   # noqa: BLE001 - an unreadable old run is skipped
            continue
        events = service.run_events(run.run_dir, tail=20_000)
        peaks = [e.data["peak_memory_gb"] for e in events
                 if e.kind == "train" and isinstance(e.data.get("peak_memory_gb"), (int, float))]
        if peaks:
            est = run.status.estimate_gb
            return ("<div>" + say("model.last_run", name=html.escape(run.name),
                                  peak=max(peaks)) +
                    (say("model.last_run.estimate", estimate=est)
                     if isinstance(est, (int, float)) else "") + "</div>")
    return ""


def memory_html(est, free: float, where: str, measured: str = "", spread: str = "") -> str:
    """The estimate against free memory; `spread`: how a run over several processes shares the
    work (the estimate is then per GPU)."""
    if est is None:
        return note(say("mem.none"))
    if spread:
        measured += f"<div>{html.escape(spread)}</div>"
    parts = [(say("mem.weights"), est.weights, "#6366f1"), (say("mem.lora"), est.lora, "#22c55e"),
             (say("mem.activations"), est.activations, "#f59e0b"),
             (say("mem.overhead"), est.overhead, "#94a3b8")]
    scale = max(est.total, free) or 1
    bar = "".join(f'<span style="width:{100 * v / scale:.1f}%;background:{c}" title="{n}"></span>'
                  for n, v, c in parts)
    legend = " · ".join(f'<span style="color:{c}">■</span> {n} {v / GiB:.2f} GiB'
                        for n, v, c in parts)
    fits = est.total <= free
    verdict = say("mem.verdict", total=est.total / GiB, free=free / GiB, where=where) + \
        say("mem.fits" if fits else "mem.too_big")
    return (f'<div class="mem {"mem-ok" if fits else "mem-over"}"><div class="mem-bar">{bar}'
            f'<i style="left:{100 * free / scale:.1f}%" title="{say("mem.free")}"></i></div>'
            f'<div class="mem-legend">{legend}</div><div>{verdict}</div>{measured}</div>')


def time_html(estimate) -> str:
    """The time estimate, and what to change when it is long for this machine."""
    if estimate is None:
        return note(say("time.none"))
    text = say("time.estimate", duration=_duration(estimate.seconds), steps=estimate.steps,
               tokens=estimate.tokens, speed=estimate.speed.tokens_per_s,
               source=html.escape(engine(estimate.source)))
    if estimate.seconds > 1800:
        text += say("time.long")
    return f'<div class="mem">{text}</div>'


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return say("time.minutes", m=minutes) if minutes < 60 else \
        say("time.hours", h=minutes // 60, m=minutes % 60)


def checks_html(service: Service, config: FineTuningConfig, plan, notes: list) -> str:
    """What Start would refuse now (the service's preflight; memory has its own box above),
    and what the automatic settings become on this machine (the run's plan)."""
    problems = service.check(config, allow_over_memory=True)
    resolved, backend = plan.config, plan.backend
    precision = "bfloat16" if resolved.bf16 else "float16" if resolved.fp16 else "float32"
    extras = "".join(say(key) for key, on in (("checks.qlora", resolved.load_in_4bit),
                                              ("checks.packing", resolved.packing),
                                              ("checks.checkpointing",
                                               resolved.gradient_checkpointing)) if on)
    extras += say("checks.backend", backend=backend) if backend else ""
    auto = say("checks.here", device="CPU" if resolved.cpu_only else "GPU", precision=precision,
               extras=extras)
    text = "\n".join(engine(n) for n in notes)
    if problems:
        return note("\n".join([engine(p) for p in problems] + [auto]), "error")
    return note((text + "\n" if text else "") + say("checks.ok") + auto, "ok")


# ---------------------------------------------------------------------------- wiring
def wire(t: ModelTab, form: ConfigForm, service: Service, demo: gr.Blocks, page: gr.Tab) -> list:
    """Wire the tab; returns the events that rewrite the form (the data view follows them).
    Its boxes are redrawn whenever it is shown too: a run that ended elsewhere (the Train tab,
    another browser) no longer refuses a start here."""

    @guard
    def summary(*values):
        try:
            config, notes = form.to_config(*values)
            plan = service.plan(config)
        except Exception as e:   # noqa: BLE001 - a half-typed value: say so, keep serving
            return gr.skip(), gr.skip(), gr.skip(), \
                note(say("checks.unreadable", error=error_text(e)), "error"), gr.skip()
        cli = command_line(config, output_dir=str(service.runs_dir / "my-run"))
        measured = last_measured(service, config.model_name)
        return (describe_model(config.model_name),
                memory_html(plan.estimate, plan.free_bytes, plan.where, measured, plan.processes),
                time_html(service.time_estimate(config)),
                checks_html(service, config, plan, notes), cli)

    summary_outputs = [t.model_info, t.memory, t.time, t.checks, t.cli]
    gr.on(form.triggers, summary, form.inputs, summary_outputs, trigger_mode="always_last",
          show_progress="hidden", api_name=False)
    demo.load(summary, form.inputs, summary_outputs, api_name=False)
    page.select(summary, form.inputs, summary_outputs, show_progress="hidden", api_name=False)

    @guard
    def measure(*values):
        """Says it is measuring in the box itself (an overlay would cover the estimate)."""
        config, _ = form.to_config(*values)
        yield note(say("model.measuring"))
        try:
            service.measure_speed(config)
        except Refused as e:
            yield shout(error_text(e))
            return
        yield time_html(service.time_estimate(config))

    t.measure.click(measure, form.inputs, t.time, api_name="measure_speed",
                    show_progress="hidden")

    @guard
    def use_folder(path):
        path = (path or "").strip()
        try:
            service.paths.path(path or ".")   # the page's service: served folders only
        except Refused as e:
            shout(error_text(e))
            return gr.skip()
        if not is_local_model(path):
            shout(say("model.not_folder", path=path or say("model.that")))
            return gr.skip()
        path = str(Path(path).expanduser().resolve())
        return gr.update(choices=model_choices(path), value=path)

    t.use_folder.click(use_folder, t.folder, t.model, api_name=False)
    t.folder.submit(use_folder, t.folder, t.model, api_name=False)

    @guard
    def preset(name, *values):
        outputs = with_preset(service, form, values, name)
        toast(say("model.preset_applied", name=preset_name(name)))
        return outputs

    @guard
    def save_yaml(*values):
        config, _ = form.to_config(*values)
        folder = service.runs_dir / "configs"
        folder.mkdir(exist_ok=True)
        path = config.save(folder / "qwen3-studio-config.yaml")
        return gr.update(value=str(path), visible=True)

    @guard
    def load_yaml(file):
        from studio.config import ConfigError

        try:
            config = FineTuningConfig.load(file)
        except ConfigError as e:
            shout(f"{Path(file).name}: {error_text(e)}")
            return [gr.skip()] * len(form.inputs)
        toast(say("model.yaml_loaded", name=Path(file).name))
        return form.values(config)

    @guard
    def load_run(run_dir):
        if not run_dir:
            shout(say("model.pick_run"), "warn")
            return [gr.skip()] * len(form.inputs)
        try:
            config = service.run_config(run_dir)
        except Exception as e:   # noqa: BLE001
            shout(say("model.run_unreadable", name=Path(run_dir).name, error=error_text(e)))
            return [gr.skip()] * len(form.inputs)
        toast(say("model.run_loaded", name=Path(run_dir).name))
        return form.values(config)

    t.save_yaml.click(save_yaml, form.inputs, t.yaml_file, api_name="save_config")
    loaders = [
        t.preset.input(preset, [t.preset] + form.inputs, [t.preset_why] + form.inputs,
                       api_name=False),
        t.load_yaml.upload(load_yaml, t.load_yaml, form.inputs, api_name=False),
        t.load_run.click(load_run, t.past_run, form.inputs, api_name=False),
    ]
    t.past_run.focus(lambda: gr.update(choices=run_choices(service)), None, t.past_run,
                     api_name=False)
    return loaders


def why_text(name: str, chosen: str, why: str) -> str:
    """What the preset is for (and, for Auto, why it chose it) in the request's language."""
    if name == AUTO:
        return say("preset.why.auto", chosen=preset_name(chosen), why=engine(why),
                   preset_why=preset_purpose(chosen))
    return say("preset.why", name=preset_name(name), preset_why=preset_purpose(name))


def why_now(service: Service, form: ConfigForm):
    """Page load, once the kept form is back: what the picked preset is for and, for Auto, why
    it fits the dataset in the form (a reload mid-run said "no dataset yet" beside the data)."""
    @guard
    def why(name, *values):
        if name != AUTO:
            return why_text(name, name, "")
        config, _ = form.to_config(*values)
        try:
            rows = len(service.data.dataset(config.data_path)) if config.data_path else None
        except Exception:   # noqa: BLE001 - the Data tab says what is wrong with the file
            rows = None
        return why_text(AUTO, *choose_preset(rows))
    return why


def with_preset(service: Service, form: ConfigForm, values, name: str) -> list:
    """The sentence that says why, then the form with preset `name` applied (Auto: the one for
    the loaded data's size). Only the fields the preset sets are written: the others are left
    as they are, so a dataset path typed while this ran is not put back to the old one."""
    config, _ = form.to_config(*values)
    analysis = service.data.cached(config)
    rows = len(analysis.dataset) if analysis else None
    chosen, why = choose_preset(rows) if name == AUTO else (name, "")
    sets, text, config = set(PRESETS[chosen].fields), why_text(name, chosen, why), \
        apply_preset(config, chosen)
    report = analysis.report if analysis else None
    drop = name == AUTO and report and not config.system_prompt and \
        config.template_system_prompt == "keep" and drop_template_system(report)
    if drop:        # the rows teach an identity the template's own prompt contradicts
        config, text = config.replace(template_system_prompt="drop"), f"{text}\n\n{engine(drop)}"
        sets.add("template_system_prompt")
    return [text] + [value if field in sets else gr.skip()
                     for field, value in zip(FIELDS, form.values(config))]


def auto_preset(t: ModelTab, form: ConfigForm, service: Service):
    """After a new dataset is loaded: with the picker on Auto, the preset for its size."""
    @guard
    def apply(name, *values):
        if name != AUTO:
            return [gr.skip()] * (len(form.inputs) + 1)
        return with_preset(service, form, values, AUTO)

    def follow(event):
        return event.then(apply, [t.preset] + form.inputs, [t.preset_why] + form.inputs,
                          api_name=False, show_progress="hidden")
    return follow


def on_load(t: ModelTab, form: ConfigForm, service: Service):
    """Page load: hardware, backends and past runs (the probe imports torch, so not at start)."""
    hardware, backends = hardware_text(service)
    return hardware, backends, gr.update(choices=run_choices(service))
