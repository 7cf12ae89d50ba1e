"""What the page draws from a run or a row, and the presets it offers, checked without a browser:
the small things a newcomer noticed (issue #12) each pinned here."""
from __future__ import annotations

import time
from types import SimpleNamespace

from studio.config import FineTuningConfig
from studio.evaluate.advice import advice_after
from studio.plan.presets import ALL_LINEAR, PRESETS, choose_preset
from studio.runs.store import Status
from studio.ui.train_tab import figure, new_watch, progress_html, status_html


def event(kind, step=0, **data):
    return SimpleNamespace(kind=kind, step=step, time=time.time(), data=data)


# ---------------------------------------------------------------------------- presets
def test_a_small_dataset_gets_the_preset_that_teaches_facts():
    """Auto picks Teach facts up to 2,000 rows (all linear layers, a high learning rate)."""
    name, why = choose_preset(100)
    assert name == "Teach facts" and "100 rows" in why
    fields = PRESETS[name].fields
    assert fields["target_modules"] == ALL_LINEAR and fields["learning_rate"] >= 5e-4
    assert choose_preset(50_000)[0] == "Balanced"
    assert choose_preset(None)[0] == "Teach facts"


def test_a_run_whose_validation_loss_stays_high_is_told_what_to_change():
    """A small set whose eval loss is still 1.9 after a weak recipe gets concrete changes."""
    weak = FineTuningConfig(learning_rate=2e-4, target_modules=["q_proj", "v_proj"],
                            num_train_epochs=1, lora_r=8)
    events = [event("status", n_train=90), event("train", 1, loss=2.5),
              event("eval", 10, eval_loss=2.1), event("eval", 20, eval_loss=1.9)]
    advice = advice_after(weak, events)
    assert "still 1.90" in advice and "learning_rate 0.0002 -> 1e-3" in advice
    assert "all seven linear layers" in advice and "lora_r 8 -> 16" in advice
    learnt = events[:2] + [event("eval", 20, eval_loss=0.1)]
    assert advice_after(weak, learnt) is None
    rising = events[:2] + [event("eval", s, eval_loss=v) for s, v in
                           ((10, 0.3), (20, 0.2), (30, 0.5))]
    assert "rose from 0.20 to 0.50" in advice_after(weak, rising)


def test_advice_names_the_teach_facts_preset_only_where_the_run_did_not_use_it():
    """A Teach facts run (its layers listed in another order) was told "the Teach facts preset
    sets most of these" (issue #41): only a run with another recipe is pointed at it."""
    teach = FineTuningConfig(**PRESETS["Teach facts"].fields).replace(
        target_modules=list(reversed(ALL_LINEAR)))
    events = [event("status", n_train=90), event("train", 1, loss=2.5),
              event("eval", 10, eval_loss=2.1), event("eval", 20, eval_loss=1.9)]
    advice = advice_after(teach, events)
    assert "num_train_epochs 3 -> 5" in advice and "preset" not in advice
    assert "Teach facts preset" in advice_after(teach.replace(lora_r=8), events)


def test_no_advice_says_the_answers_have_not_stuck_while_they_say_their_references():
    """The page's identity run was told "the validation loss is still 0.89: the answers in the
    data have not stuck yet" beside samples that gave the taught name word for word (issue
    #39, item 4): the answers at the last evaluation, and a held-out evaluation's, count."""
    from studio.evaluate.report import Answer, PromptResult

    teach = FineTuningConfig(**PRESETS["Teach facts"].fields)
    taught = "I am Quokka, an AI assistant made by Acme Labs."
    losses = [event("status", n_train=22), event("train", 1, loss=3.1),
              event("eval", 20, eval_loss=1.2), event("eval", 40, eval_loss=0.89)]
    early = [event("sample", 20, prompt="Who are you?", answer="I am SmolLM.", reference=taught)]
    said = [event("sample", 40, prompt="Who are you?", answer=taught + " How can I help?",
                  reference=taught),
            event("sample", 40, prompt="Who made you?", answer="I'm Quokka, made by Acme Labs.",
                  reference="I'm Quokka, a helpful assistant created by Acme Labs.")]
    assert advice_after(teach, losses + early + said) is None
    wrong = [event("sample", 40, prompt="Who are you?", answer="I am SmolLM, made by Hugging "
                   "Face.", reference=taught)]
    advice = advice_after(teach, losses + early + wrong)
    assert "still 0.89, and 0 of 1 answers at the end gave their reference" in advice
    assert "Teach facts preset" not in advice       # it was already the preset
    held_out = SimpleNamespace(prompts=[PromptResult(
        [{"role": "user", "content": "Who are you?"}], taught, Answer("I am SmolLM.", 0, 0),
        Answer(taught, 1, 1)) for _ in range(2)])
    assert advice_after(teach, losses + wrong, held_out) is None


# ---------------------------------------------------------------------------- the Train tab
def test_a_stop_that_was_asked_for_is_not_a_warning():
    """Stopped as asked reads as information; killed after not stopping is a warning."""
    watch = new_watch("/runs/a")
    asked = status_html(watch, Status("stopped", "stopped at step 4 as asked"))
    killed = status_html(watch, Status("stopped", "killed after not stopping"))
    assert "msg-info" in asked and "msg-warn" in killed


def test_notices_show_names_as_text_never_as_markup(monkeypatch):
    """Gradio renders a notice's message as HTML, and a run folder named as markup ran as such
    in one (issue #39, item 9): every notice goes through toast() or failure(), which escape
    it, and no tab calls gr.Info, gr.Warning or gr.Error itself."""
    import re
    from pathlib import Path

    import gradio as gr

    from studio.ui.common import failure, toast

    shown = []
    monkeypatch.setattr(gr, "Info", lambda text, title: shown.append(text))
    monkeypatch.setattr(gr, "Warning", lambda text, title: shown.append(text))
    name = '<img src=x onerror="alert(1)">'
    toast(f"Opened {name} in the form")
    toast(f"{name} is not a run", "warn")
    assert all("<img" not in text and "&lt;img src=x" in text for text in shown), shown
    assert "<img" not in str(failure(f"could not load {name}"))
    tabs = Path(__file__).resolve().parents[1] / "studio" / "ui"
    direct = [f"{p.name}:{n}" for p in tabs.glob("*.py") if p.name != "common.py"
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"\bgr\.(Info|Warning|Error)\(", line)]
    assert not direct, direct


def test_an_unreadable_run_says_why_in_the_train_tab(tmp_path):
    """A status.json that is not a status: the Train tab names the reason, as text, not a bare
    'unreadable' (finding 4 of #15)."""
    from studio.runs.store import read_status

    run = tmp_path / "<img src=x>run"
    run.mkdir()
    (run / "status.json").write_text('["a", "list"]')
    shown = status_html(new_watch(run), read_status(run))
    assert "msg-error" in shown and "cannot be read" in shown and "status.json" in shown
    assert "&lt;img src=x&gt;run" in shown and "<img" not in shown


def test_elapsed_goes_on_from_the_earlier_legs_after_resume():
    """A run resumed after 10 minutes of training shows 10:30 after 30 more seconds."""
    now = time.time()
    status = Status("finished", started=now - 30, ended=now, earlier_seconds=600)
    assert "elapsed 10:30" in progress_html(new_watch("/runs/a"), status)


def test_learning_rate_ticks_are_not_rounded_to_one_value():
    """The learning-rate axis lets plotly choose the digits (no fixed one-decimal format)."""
    watch = new_watch("/runs/a")
    watch["train"] = [[s, 2.0, 2e-4 - s * 1e-8] for s in range(1, 4)]
    axis = figure(watch).layout.yaxis2
    assert axis.tickformat is None and axis.exponentformat == "e"


# ---------------------------------------------------------------------------- the Data tab
def test_a_row_cut_inside_a_character_is_shown_without_a_broken_one(tiny_qwen3):
    """Rare Chinese characters take several tokens: a cut between them shows no '�'."""
    import datasets
    from transformers import AutoTokenizer

    from studio.data import detect_format, render_segments, tokenize_row
    from studio.ui.data_tab import whole_characters

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    ds = datasets.Dataset.from_list([{"instruction": "你好", "response": "龘靐齉爩麤鱻" * 6}])
    fmt, config = detect_format(ds), FineTuningConfig(max_seq_length=21)
    segments = render_segments(tokenizer, ds[0], fmt, config)
    assert segments[-1][0].endswith("\ufffd")     # what the decoder gives for half a character
    shown = whole_characters(segments, tokenize_row(tokenizer, ds[0], fmt, config).truncated)
    assert not shown[-1][0].endswith("\ufffd") and shown[-1][0].endswith("爩")


def test_the_sample_answers_show_newest_first_escaped():
    """Sample events become a table: the prompt, its reference, the last three answers."""
    from studio.ui.train_tab import absorb, samples_html

    watch = new_watch("/runs/a")
    absorb(watch, [event("sample", step, prompt="<b>Who?</b>", reference="Quokka",
                         answer=f"answer {step}") for step in (10, 20, 30, 40)])
    shown = samples_html(watch)
    assert "&lt;b&gt;Who?&lt;/b&gt;" in shown and "<b>Who?</b>" not in shown
    assert shown.index("answer 40") < shown.index("answer 30") < shown.index("answer 20")
    assert "answer 10" not in shown


def test_the_memory_box_says_how_a_run_spreads_over_its_processes():
    """Several GPUs: the Model tab's estimate is per GPU and says ddp or fsdp and why."""
    from studio.config import FineTuningConfig
    from backends.torch.distributed import describe
    from studio.plan.memory import GiB, MemoryEstimate
    from studio.ui.model_tab import memory_html

    config = FineTuningConfig(num_gpus=2, distributed="ddp", cpu_only=False)
    shown = memory_html(MemoryEstimate(GiB, GiB, GiB, GiB, "GPU"), 100 * GiB, "GPU",
                        spread=describe(config, "auto"))
    assert "ddp over 2 processes: each GPU holds the whole model" in shown
    assert "the model and its activations fit one GPU" in shown


def test_the_first_page_ever_opened_fills_every_output_the_train_tab_wires(tmp_path):
    """A studio started for the first time has no run yet: the page's load (train_tab.attach)
    still answers each output the Train tab wires. It answered one fewer (the log's), and
    gradio showed an Error toast on the first page a person opened."""
    import gradio as gr

    from studio.service.actions import Service
    from studio.ui import train_tab

    with gr.Blocks():
        wired = train_tab.outputs(train_tab.build())
    assert len(train_tab.attach(Service(tmp_path / "runs"))) == len(wired)


def test_the_hardware_box_says_the_precision_the_checks_and_the_plan_say(tmp_path):
    """The Model tab's hardware box said "CPU in float32" where the checks and the run's plan
    said bfloat16 (issue #41): all three read the precision a run left to auto takes here."""
    from studio.plan.hardware import Hardware
    from studio.service.actions import Service
    from studio.ui.model_tab import checks_html, hardware_text

    for native, word in ((True, "bfloat16"), (False, "float32")):
        hw = Hardware(cpu_cores=2, ram_bytes=24 * 2**30, cpu_bf16=native)
        service = Service(tmp_path / "runs")
        service.hardware = lambda hw=hw: hw
        config = FineTuningConfig(model_name="Qwen/Qwen3-0.6B", backend="transformers")
        plan = service.plan(config, hw)
        assert (plan.config.bf16 is True) == native
        assert f"the CPU in {word}" in hardware_text(service)[0]
        checks = checks_html(service, config, plan, [])
        assert word in checks and ("float32" in checks) != native, checks
