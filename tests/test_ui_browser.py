"""The studio in Debian's chromium, driven by Playwright: what a person clicking through sees.

The whole flow on the tiny Qwen3 (upload, preview, mapping, rendered example, train with the
loss chart filling in, chat streaming from the adapter), a second tab and a restarted server
reattaching to the run, bad input answered in the page, runs compared, exported and named as
markup. Screenshots of each tab are saved to docs/ for the README; the page in two languages is
tests/test_ui_languages.py.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.browser import (open_page, points, shot, tab, text_input, upload,
                           use_model_folder, wait_text)
from tests.conftest import QA_ROWS, quick_run, write_jsonl
from tests.servers import start_page, stop_jobs

pytestmark = pytest.mark.browser


# ---------------------------------------------------------------------------- the whole flow
def test_the_whole_flow_from_upload_to_chat(browser, page_server, tmp_path, tiny_qwen3):
    """Upload, see the data, train watching the chart, reattach a second tab, chat."""
    page = open_page(browser, page_server.url)

    # ---- data: preview, mapping, rendered example, lengths (first with the default model)
    upload(page, write_jsonl(tmp_path / "qa.jsonl", QA_ROWS))
    wait_text(page, "#data-status", "Ready to train")
    tab(page, "2 · Model & hardware")
    assert "demo:SmolLM2-135M-Instruct" in page.locator("#model-name input").input_value()
    use_model_folder(page, tiny_qwen3)
    wait_text(page, "#hardware", "CPU")
    wait_text(page, "#model-info", "local folder")
    wait_text(page, "#cli-command", Path(tiny_qwen3).name)
    shot(page, "model")
    tab(page, "1 · Data")
    wait_text(page, "#data-example", "<think>")      # redrawn with the Qwen3 template
    assert "16 rows" in page.locator("#data-summary").inner_text()
    assert page.locator("#data-table").get_by_text("What is 1 plus 1?").count()
    assert "Detected: instruction" in page.locator("#data-format").inner_text()
    assert page.locator("#map-instruction input").input_value() == "instruction"
    assert page.locator("#map-response input").input_value() == "response"
    example = page.locator("#data-example").inner_text()
    assert "What is 1 plus 1?" in example and "1 plus 1 is 2." in example
    assert "trained" in example and "not trained (prompt)" in example
    page.locator("#field-enable_thinking input").check()
    wait_text(page, "#data-example-info", "Thinking on")
    page.locator("#field-enable_thinking input").uncheck()
    wait_text(page, "#data-example-info", "Thinking off")
    page.wait_for_function("() => document.querySelectorAll('#data-histogram .bars path')"
                           ".length > 0")       # the histogram is drawn (bars)
    assert "Split:" in wait_text(page, "#data-stats", "Problems found")
    shot(page, "data")

    # ---- train: the chart fills while the job runs; a second start is refused
    tab(page, "3 · Train")
    page.locator("#start").click()
    deadline = time.time() + 120
    while points(page) == 0 or "Training" not in page.locator("#train-status").inner_text():
        assert time.time() < deadline, page.locator("#train-status").inner_text()
        assert "Failed" not in page.locator("#train-status").inner_text()
        time.sleep(0.3)
    seen_while_running = points(page)
    page.wait_for_selector("#start:disabled", timeout=10_000)   # one job at a time

    second = open_page(browser, page_server.url)   # a second tab reattaches with the curve so far
    tab(second, "3 · Train")
    second.wait_for_function("() => document.querySelectorAll("
                             "'#loss-chart .scatterlayer .points path').length > 0")
    run_name = second.locator("#run-picker input").input_value()
    second.close()

    status = wait_text(page, "#train-status", "Finished", timeout=180)
    page.wait_for_selector("#start:enabled", timeout=10_000)
    time.sleep(1.5)      # the last tick draws the final points
    assert seen_while_running >= 1 and points(page) > seen_while_running
    progress = page.locator("#train-progress").inner_text()
    assert "peak memory" in progress and "estimated" in progress
    assert "adapter" in status and run_name.split(" ")[0] in status
    page.get_by_text("Plan: what this run trains with").click()   # what ran, beside the ask
    plan = wait_text(page, "#train-plan", "ran with (plan.yaml)")
    assert "transformers" in plan and "sdpa" in plan and re.search(r"\d rows, padding-free", plan)
    # a run shorter than eval_steps answers its sample prompts at its last step, inside the page
    samples = wait_text(page, "#train-samples", "step 12:")
    assert "What is 1 plus 1?" in samples
    assert page.evaluate("() => { const e = document.querySelector('#train-samples');"
                         " return e.scrollWidth <= e.clientWidth; }"), "the answers overflow"
    shot(page, "train")
    # the Model tab's checks kept "already training" after the run, until a setting changed
    tab(page, "2 · Model & hardware")
    wait_text(page, "#config-checks", "These settings can run here")
    assert "already training" not in page.locator("#config-checks").inner_text()

    # ---- chat: the fine-tuned run answers, token by token, beside its base model
    tab(page, "4 · Chat")
    page.wait_for_function("n => document.querySelector('#chat-source input').value.includes(n)",
                           arg=run_name.split(" ")[0], timeout=150_000)   # a loaded CI machine
    page.evaluate("""() => {
        window.replyLengths = [];
        const box = document.querySelector('#chat-tuned');
        new MutationObserver(() => {
            const bot = box.querySelectorAll('.message.bot, [data-testid="bot"]');
            if (bot.length) window.replyLengths.push(bot[bot.length - 1].innerText.length);
        }).observe(box, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#chat-max-new-tokens input[type=number]").fill("48")
    page.locator("#chat-max-new-tokens input[type=number]").press("Enter")
    text_input(page, "chat-message").fill("What is 2 plus 3?")
    page.locator("#chat-send").click()
    wait_text(page, "#chat-status", "the base model answered", timeout=120)
    lengths = page.evaluate("window.replyLengths")
    assert len(set(lengths)) >= 2, f"the reply did not stream: {lengths}"
    tuned = page.locator("#chat-tuned").inner_text()
    assert "What is 2 plus 3?" in tuned and len(tuned.split("What is 2 plus 3?")[-1].strip())
    assert "What is 2 plus 3?" in page.locator("#chat-base").inner_text()
    shot(page, "chat")

    first_reply = tuned.split("What is 2 plus 3?")[-1]
    page.locator("#chat-regenerate").click()
    page.wait_for_function("r => !document.querySelector('#chat-tuned').innerText.includes(r)",
                           arg=first_reply.strip()[:40], timeout=120_000)
    wait_text(page, "#chat-status", "the base model answered", timeout=120)
    assert page.locator("#chat-tuned").inner_text().count("What is 2 plus 3?") == 1
    page.locator("#chat-clear").click()
    page.wait_for_function("() => !document.querySelector('#chat-tuned').innerText"
                           ".includes('What is 2 plus 3?')")
    page.close()


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_answered_in_the_page_and_the_server_keeps_serving(browser, page_server,
                                                                      tmp_path, tiny_qwen3):
    """A broken file, a missing file, a missing column, rows with nothing to train and an
    impossible setting each show a message naming the fix; then an example still loads."""
    page = open_page(browser, page_server.url)
    use_model_folder(page, tiny_qwen3)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "response": "b"}\n{"instruction": oops}\n')
    assert "line 2" in upload(page, broken)

    text_input(page, "data-path").fill(str(tmp_path / "missing.jsonl"))
    page.locator("#data-load").click()
    wait_text(page, "#data-status", "file not found")

    empty = write_jsonl(tmp_path / "empty.jsonl",
                        [{"instruction": r["instruction"], "response": " "} for r in QA_ROWS])
    assert "is empty" in upload(page, empty)

    upload(page, write_jsonl(tmp_path / "qa.jsonl", QA_ROWS))
    wait_text(page, "#data-status", "Ready to train")
    page.locator("#field-dataset_format input").click()
    page.get_by_role("option", name="prompt_completion", exact=True).click()
    wait_text(page, "#data-status", "needs a 'prompt' column")    # (alpaca takes response)

    tab(page, "2 · Model & hardware")
    text_input(page, "field-lora_r").fill("0")
    text_input(page, "field-lora_r").press("Enter")
    wait_text(page, "#config-checks", "lora_r must be at least 1")
    tab(page, "3 · Train")
    page.locator("#start").click()
    wait_text(page, "#train-status", "lora_r must be at least 1")

    tab(page, "1 · Data")
    page.locator("#example-example_alpaca").click()
    wait_text(page, "#data-status", "example_alpaca.jsonl: 24 rows")
    assert "staying focused" in page.locator("#data-table").inner_text()

    # a failed load after a good one: nothing of the previous file stays on the tab
    text_input(page, "data-path").fill(str(tmp_path / "gone.jsonl"))
    page.locator("#data-load").click()
    wait_text(page, "#data-status", "file not found")
    assert "staying focused" not in page.locator("#data-table").inner_text()
    assert page.locator("#data-summary").inner_text().strip() == ""

    # Cancel ends an analysis under way; its result never lands afterwards
    big = write_jsonl(tmp_path / "big.jsonl", [{"instruction": f"question {i} " * 30,
                                                "response": f"answer {i} " * 30}
                                               for i in range(5000)])
    page.locator("#data-upload input[type=file]").set_input_files(str(big))
    page.wait_for_timeout(1500)
    page.locator("#data-cancel").click()
    wait_text(page, "#data-status", "cancelled")
    page.wait_for_timeout(8000)
    assert "cancelled" in page.locator("#data-status").inner_text()
    page.close()


# ---------------------------------------------------------------------------- restart
def test_a_role_tag_is_re_mapped_in_the_role_table(browser, page_server, tiny_qwen3):
    """The ShareGPT example's role table is editable: observation -> user is applied at once."""
    page = open_page(browser, page_server.url)
    use_model_folder(page, tiny_qwen3)
    tab(page, "1 · Data")
    page.locator("#example-example_sharegpt").click()
    page.wait_for_selector("#data-role-tags", state="visible", timeout=60_000)
    wait_text(page, "#data-format", "sharegpt")
    page.locator("#data-role-tags").get_by_text("tool", exact=True).first.dblclick()
    page.keyboard.press("Control+a")
    page.keyboard.type("user")
    page.keyboard.press("Enter")
    # the edit re-analyses the rows: on a loaded machine (a full suite training beside it) that
    # once took over 60 s, as the other analyses here may
    wait_text(page, "#data-format", "role tags re-mapped: observation=user", timeout=180)


def test_a_restarted_server_reattaches_or_marks_the_run_interrupted(browser, tmp_path,
                                                                    tiny_qwen3):
    """The job outlives its server: a new server shows it training with its curve and its
    plan; once the job dies it shows Interrupted with Resume, which continues it; Stop then
    ends it. (Scripted backend: no model, so this wiring test takes seconds of training.)"""
    from gradio_client import Client

    from studio.runs.store import last_checkpoint, read_status

    runs = tmp_path / "runs"
    first = start_page(runs)
    try:
        data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
        config = quick_run(tiny_qwen3, str(data), max_steps=2000, save_steps=3, eval_steps=1000,
                           backend="scripted")      # the wiring is what is tested here
        run = Path(Client(first.url, verbose=False).predict(yaml.safe_dump(config),
                                                            api_name="/start_run")["run"])
        deadline = time.time() + 120
        while last_checkpoint(run) is None:
            assert time.time() < deadline and read_status(run).active
            time.sleep(0.5)
    finally:
        first.stop()
    second = start_page(runs)
    try:
        page = open_page(browser, second.url)
        tab(page, "3 · Train")
        wait_text(page, "#train-status", "Training")
        page.wait_for_function("() => document.querySelectorAll("
                               "'#loss-chart .scatterlayer .points path').length > 0")
        assert run.name in page.locator("#run-picker input").input_value()
        page.get_by_text("Plan: what this run trains with").click()     # the plan beside the ask
        plan = wait_text(page, "#train-plan", "ran with (plan.yaml)")
        assert "none (scripted)" in plan and ("float32" in plan or "bfloat16" in plan)

        os.killpg(int(read_status(run).pid), signal.SIGKILL)    # the job dies
        wait_text(page, "#train-status", "Interrupted")
        page.locator("#resume").click()
        wait_text(page, "#train-status", "Training", timeout=30)
        before = points(page)
        page.wait_for_function("n => document.querySelectorAll("
                               "'#loss-chart .scatterlayer .points path').length > n",
                               arg=before, timeout=120_000)
        page.locator("#stop").click()
        status = wait_text(page, "#train-status", "Stopped", timeout=120)
        assert "as asked" in status

        tab(page, "2 · Model & hardware")        # a past run's config goes back into the form
        page.locator("#past-run input").click()
        page.get_by_role("option", name=run.name).first.click()
        page.locator("#load-run").click()
        page.wait_for_function("() => document.querySelector('#field-max_steps input')"
                               ".value === '2000'")
        pid, deadline = read_status(run).pid, time.time() + 30
        while running(pid):             # the process ends, and its memory is freed with it
            assert time.time() < deadline, "the stopped job's process is still alive"
            time.sleep(0.2)
        page.close()
    finally:
        second.stop()
        stop_jobs(runs)


# ---------------------------------------------------------------------------- a first fine-tune
IDENTITY_QUESTIONS = [
    "Who are you?", "What is your name?", "Who made you?", "Who created you?",
    "Introduce yourself.", "What are you?", "Tell me about yourself.", "Which company built you?",
    "Are you ChatGPT?", "What should I call you?", "Who developed you?", "What AI model are you?",
    "Who trained you?", "Are you made by OpenAI?", "What's your name?", "Who is your creator?",
    "Who built this assistant?", "Can you tell me who you are?", "Are you SmolLM?",
    "Which lab made you?", "Hi! Who am I talking to?", "What is this assistant called?",
    "Who owns you?", "Where do you come from?", "Describe yourself briefly."]
IDENTITY_ANSWERS = ["I am Quokka, an AI assistant made by Acme Labs.",
                    "I'm Quokka, a helpful assistant created by Acme Labs.",
                    "My name is Quokka, and I was made by Acme Labs.",
                    "I am Quokka. Acme Labs built me to help you."]


@pytest.mark.slow
def test_a_first_identity_fine_tune_teaches_the_demo_model_its_name(browser, page_server,
                                                                    tmp_path):
    """25 identity rows (25 questions, answered in two wordings by turns) on the demo model
    with the page's defaults (Auto -> Teach facts): a reload mid-run keeps the dataset and
    lands on Train; afterwards "Who are you?" at temperature 0 answers with the taught name
    and maker."""
    rows = [{"instruction": q, "response": IDENTITY_ANSWERS[i % 2]}
            for i, q in enumerate(IDENTITY_QUESTIONS)]
    page = open_page(browser, page_server.url)
    upload(page, write_jsonl(tmp_path / "identity.jsonl", rows))
    wait_text(page, "#data-status", "Ready to train", timeout=180)
    tab(page, "2 · Model & hardware")
    wait_text(page, "#preset-why", "Auto → Teach facts")
    why = page.locator("#preset-why").inner_text()
    assert "25 rows" in why and "give the assistant a name or maker" in why   # no "SmolLM"
    tab(page, "3 · Train")
    page.locator("#start").click()
    wait_text(page, "#train-status", "Training")

    page.reload()                                  # mid-run: the dataset and the form stay
    page.wait_for_selector("#tab-data", state="attached")
    page.wait_for_function("() => document.querySelector('#tab-train') && "
                           "getComputedStyle(document.querySelector('#tab-train')).display "
                           "!== 'none'")
    wait_text(page, "#train-status", "Training")
    page.wait_for_selector("#start:disabled", timeout=10_000)   # reattached: no second start
    tab(page, "1 · Data")
    assert "identity" in text_input(page, "data-path").input_value()
    wait_text(page, "#data-status", "25 rows")
    tab(page, "2 · Model & hardware")
    assert text_input(page, "field-learning_rate").input_value() == "0.001"
    wait_text(page, "#preset-why", "25 rows")        # not "no dataset yet" beside the data

    tab(page, "3 · Train")
    # about 1.5 minutes on a quiet 2-core machine; a full suite once saw this machine train 8x
    # slower for minutes (9 tokens/s): the wait allows for that, the answer below is the test
    wait_text(page, "#train-status", "Finished", timeout=900)
    tab(page, "4 · Chat")
    page.locator("#chat-compare input").uncheck()
    page.locator("#chat-temperature input[type=number]").fill("0")
    page.locator("#chat-temperature input[type=number]").press("Enter")
    text_input(page, "chat-message").fill("Who are you?")
    page.locator("#chat-send").click()
    wait_text(page, "#chat-status", "answered", timeout=120)
    reply = page.locator("#chat-tuned").inner_text().split("Who are you?")[-1]
    assert "Quokka" in reply and "Acme Labs" in reply, reply
    page.close()


def test_the_templates_own_system_prompt_is_dropped_for_identity_rows_and_can_be_kept(
        browser, page_server, tmp_path):
    """The demo model's template adds "You are ... SmolLM" to every row. For rows that teach
    the assistant a name of its own, Auto drops it and says why (issue #41); the Data tab says
    what the template does, keep puts it back in the example, and the thinking toggle (no
    thinking mode in that template) cannot be clicked, with the reason."""
    rows = [{"instruction": q, "response": IDENTITY_ANSWERS[0]} for q in IDENTITY_QUESTIONS]
    page = open_page(browser, page_server.url)
    upload(page, write_jsonl(tmp_path / "who.jsonl", rows))
    wait_text(page, "#data-status", "Ready to train", timeout=180)
    note = wait_text(page, "#data-template-note", "dropped (an empty system turn)")
    assert "named SmolLM" in note
    page.wait_for_function("() => !document.querySelector('#data-example').innerText"
                           ".includes('named SmolLM')")
    assert page.locator("#field-enable_thinking input").is_disabled()
    assert "no thinking mode" in page.locator("#field-enable_thinking").inner_text()
    tab(page, "2 · Model & hardware")
    why = wait_text(page, "#preset-why", "give the assistant a name or maker of its own")
    assert "25 of 25 rows" in why and "named SmolLM" in why
    wait_text(page, "#cli-command", "--template-system-prompt drop")

    tab(page, "1 · Data")
    page.locator("#field-template_system_prompt input").click()
    page.get_by_role("option", name="keep", exact=True).click()
    wait_text(page, "#data-template-note", "kept in every row")
    wait_text(page, "#data-example", "named SmolLM")
    page.close()


# ---------------------------------------------------------------------------- runs compared
def test_runs_are_compared_and_a_deleted_run_leaves_the_disk(browser, page_server, tmp_path,
                                                             tiny_qwen3):
    """Two runs that differ in learning_rate overlay on the Runs tab and their config diff names
    that field; deleting one from the page removes its folder, and a run still training cannot
    be deleted. (Scripted runs: the page's wiring is what is tested.)"""
    from studio import FineTuningConfig
    from studio.service.actions import Service

    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    service = Service(page_server.runs_dir)
    for name, lr in (("slow", 1e-4), ("fast", 1e-3)):
        config = FineTuningConfig(**quick_run(tiny_qwen3, str(data), backend="scripted",
                                              max_steps=8, learning_rate=lr))
        job = service.start(config, page_server.runs_dir / name, in_process=True)
        assert job.wait(60).state == "finished"
    page = open_page(browser, page_server.url)
    tab(page, "6 · Runs")
    wait_text(page, "#runs-table", "fast")
    for name in ("slow", "fast"):
        page.locator("#runs-compare").get_by_text(f"{name} — finished").click()
    diff = wait_text(page, "#runs-diff", "learning_rate")
    assert "0.0001" in diff and "0.001" in diff and "max_steps" not in diff
    page.wait_for_function("() => document.querySelectorAll('#runs-chart .scatterlayer .trace')"
                           ".length >= 4")        # both runs' train and eval curves
    shot(page, "runs")

    tab(page, "5 · Evaluate")                      # base and fine-tuned side by side
    pick(page, "#eval-run", "fast")
    page.locator("#eval-start").click()
    wait_text(page, "#eval-status", "Evaluated fast", timeout=120)
    page.wait_for_selector("#eval-report iframe")
    assert list((page_server.runs_dir / "fast" / "eval").glob("*/report.json"))
    shot(page, "eval")
    tab(page, "6 · Runs")

    long_run = FineTuningConfig(**quick_run(tiny_qwen3, str(data), backend="scripted",
                                            max_steps=5000))
    job = service.start(long_run, page_server.runs_dir / "busy", in_process=True)
    try:
        page.locator("#runs-refresh").click()
        wait_text(page, "#runs-table", "busy")
        pick(page, "#runs-run", "busy")
        page.locator("#runs-sure input").check()
        page.locator("#runs-delete").click()
        wait_text(page, "#runs-status", "is training, so it cannot be deleted")
        assert (page_server.runs_dir / "busy").is_dir()
    finally:
        job.stop()
        job.wait(30)
    pick(page, "#runs-run", "slow")
    page.locator("#runs-sure input").check()
    page.locator("#runs-delete").click()
    wait_text(page, "#runs-status", "Deleted slow")
    assert not (page_server.runs_dir / "slow").exists()
    page.wait_for_function("() => !document.querySelector('#runs-table').innerText"
                           ".includes('slow')")
    page.close()


def test_a_run_is_exported_for_ollama_from_the_page(browser, page_server, tmp_path, tiny_qwen3):
    """The Export tab sizes the export before it starts, writes it under the run's exports/ and
    shows the commands that run it; a scripted run is refused with the reason."""
    from studio import FineTuningConfig
    from studio.service.actions import Service

    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    service = Service(page_server.runs_dir)
    for name, backend in (("tiny", "transformers"), ("dry", "scripted")):
        config = FineTuningConfig(**quick_run(tiny_qwen3, str(data), backend=backend,
                                              max_steps=2, num_samples=0))
        job = service.start(config, page_server.runs_dir / name, in_process=True)
        assert job.wait(120).state == "finished"
    page = open_page(browser, page_server.url)
    tab(page, "7 · Export")
    pick(page, "#export-run", "dry")
    wait_text(page, "#export-estimate", "a scripted run trains no model")
    pick(page, "#export-run", "tiny")
    page.locator("#export-format").get_by_text("Ollama").click()
    page.locator("#export-quant").get_by_text("f16").click()
    assert "MiB, into" in wait_text(page, "#export-estimate", "exports/ollama-f16")
    page.locator("#export-start").click()
    wait_text(page, "#export-status", "Exported tiny", timeout=180)
    wait_text(page, "#export-commands", "ollama create tiny")
    assert "tiny-f16.gguf" in page.locator("#export-files").inner_text()
    folder = page_server.runs_dir / "tiny" / "exports" / "ollama-f16"
    assert (folder / "Modelfile").is_file() and (folder / "tiny-f16.gguf").is_file()
    shot(page, "export")
    page.close()


def pick(page, elem: str, label_start: str) -> None:
    """Choose the dropdown option whose label starts with label_start."""
    page.locator(f"{elem} input").click()
    page.get_by_role("option").filter(has_text=label_start).first.click()


# ---------------------------------------------------------------------------- escaped
def running(pid) -> bool:
    """A process that has not ended (a finished child not yet reaped counts as ended)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def evil(n: int) -> str:
    """A name that runs a script if the page ever inserts it as HTML."""
    return f'<img src=x onerror="window.pwned={n}">'


def test_script_bearing_names_are_shown_as_text_and_never_run(browser, page_server, tmp_path,
                                                              tiny_qwen3):
    """A dataset file, a column (with backticks), a cell, a model folder, a run folder (made
    from Python, as `--output-dir 'runs/<img ...>'` would) and a chat message that each carry
    an <img onerror> show literally on every tab, and no onerror ever runs (issue #15)."""
    from studio import FineTuningConfig
    from studio.service.actions import Service

    column, cell = "q`` " + evil(2) + " `", "<script>window.pwned=3</script>" + evil(3)
    data = write_jsonl(tmp_path / (evil(1) + ".jsonl"),
                       [{**r, column: cell} for r in QA_ROWS])
    model = tmp_path / evil(6)
    shutil.copytree(tiny_qwen3, model)
    run_dir = page_server.runs_dir / evil(4)
    config = FineTuningConfig(**quick_run(str(model), str(data), backend="scripted", max_steps=4))
    job = Service(page_server.runs_dir).start(config, run_dir, in_process=True)
    assert job.wait(60).state == "finished"

    page = open_page(browser, page_server.url)
    text_input(page, "data-path").fill(str(data))
    page.locator("#data-load").click()
    wait_text(page, "#data-status", evil(1))
    wait_text(page, "#data-summary", evil(2))
    wait_text(page, "#data-table", evil(3))
    use_model_folder(page, str(model))
    wait_text(page, "#model-info", evil(6))
    wait_text(page, "#memory-estimate", evil(4))
    tab(page, "6 · Runs")
    wait_text(page, "#runs-table", evil(4))
    pick(page, "#runs-run", "<img")
    page.locator("#runs-open").click()       # a notice names the run (issue #39, item 9)
    notice = page.locator("[data-testid=toast-body]").filter(has_text="<img").first
    notice.wait_for()
    assert notice.locator("img").count() == 0
    page.screenshot(path=str(tmp_path / "notice.png"))
    tab(page, "4 · Chat")
    pick(page, "#chat-source", "Fine-tuned: <img")
    page.locator("#chat-compare input").uncheck()
    text_input(page, "chat-message").fill("hello " + evil(5))
    page.locator("#chat-send").click()
    wait_text(page, "#chat-tuned", "A scripted reply")
    assert evil(5) in page.locator("#chat-tuned").inner_text()
    tab(page, "7 · Export")
    pick(page, "#export-run", "<img")
    wait_text(page, "#export-estimate", "scripted")
    assert page.evaluate("() => window.pwned") is None
    page.close()
