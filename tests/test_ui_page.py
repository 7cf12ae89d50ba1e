"""The page as a person sees it, in chromium: every tab in Chinese after a run (no English word
outside a short list of names), the language switch in the header keeping what is on screen,
the engine's errors and refusals said in Chinese, the English page free of Chinese, and the
layout at 1440x900 and at a narrow width (nothing runs off the page, headers keep their words,
a chat pane's name stays off its messages, the Evaluate upload box shows its whole prompt).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio import FineTuningConfig
from studio.service.actions import Service
from tests.browser import open_page, shot, tab_at, text_input, use_model_folder, wait_text
from tests.conftest import QA_ROWS, quick_run, write_jsonl

pytestmark = pytest.mark.browser

CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")

# Every text node that shows, with placeholders and the name of the box it sits in. What the
# data, the model or a person wrote is not the page's to translate: the rows, the rendered
# example, a model's answers, the log, the command line, the loss chart's run names.
VISIBLE = """() => {
  const theirs = '#data-table, #data-example, #data-role-tags td, #data-role-tags .body-cell,'
    + ' #runs-table td, #runs-table .body-cell, #train-samples td, #train-log, #cli-command,'
    + ' #chat-tuned .message, #chat-base .message, #runs-compare, #run-picker, #chat-source,'
    + ' #eval-run, #export-run, #runs-run, code, footer, [role=dialog], .sr-only, script, style';
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const e = walk.currentNode.parentElement, text = walk.currentNode.textContent.trim();
    if (text && e && e.getClientRects().length && !e.closest(theirs)) out.push(text);
  }
  for (const e of document.querySelectorAll('[placeholder]'))
    if (e.getClientRects().length && e.placeholder) out.push(e.placeholder);
  return out;
}"""

# Names a Chinese page writes in Latin letters: the product, the libraries, the formats, units,
# hardware and the tools the studio hands its results to.
NAMES = """Qwen3 Studio Qwen Qwen3 LoRA QLoRA token tokens GPU GPUs CPU CUDA NVIDIA Apple Silicon
GiB MiB RAM cpu cuda bf16 fp16 fp8 float32 bfloat16 float16 NF4 JSON JSONL CSV TSV Parquet YAML GGUF
Ollama Modelfile vLLM llama cpp python EvalScope lm eval W B Weights Biases wandb tensorboard
trackio Hub API OpenAI openai peft PEFT transformers unsloth Unsloth mlx MLX sdpa AdamW
dropout loss logits checkpoint SmolLM2 SmolLM Hugging Face safetensors FSDP FSDP2 ddp fsdp
deepspeed ZeRO gloo torch compile kernel cut cross entropy v1 id pip install qwen3 studio
auto lr alpha sharegpt alpaca messages ShareGPT Alpaca ChatML Instruct demo MFU bitsandbytes
Axolotl scripted system user assistant tool string list dict int64 float64 bool f16 English
sft SFT dpo DPO beta sigmoid ipo hinge robust chosen rejected""".split()


def english_words(texts, names=()) -> list[str]:
    """The texts that still hold a Latin word once NAMES and `names`, a field's name (snake_case,
    or a word in parentheses), quoted words, file names, paths, URLs and command-line flags are
    taken out."""
    allowed = set(NAMES) | set(names)
    out = set()
    for text in texts:
        bare = re.sub(r"'[^']*'|“[^”]*”|\{[^}]*\}|<[^>]*>|\(\w+\)", " ", text, flags=re.ASCII)
        bare = re.sub(r"https?://\S+|[\w.~-]*[/\\][\w./\\~-]*|\w+:[\w.-]+|[\w-]+\.\w+"
                      r"|--?[\w-]+|\w*_\w*", " ", bare, flags=re.ASCII)
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", bare)
                 if w not in allowed and not re.fullmatch(r"[A-Z]|[a-z]|[A-Z]\d+|\d\w*", w)]
        if words:
            out.add(f"{text[:90]!r}: {' '.join(words[:6])}")
    return sorted(out)


def open_every_accordion(page) -> None:
    for wrap in page.locator(".label-wrap").all():
        if wrap.is_visible() and "open" not in (wrap.get_attribute("class") or ""):
            wrap.click()
    page.wait_for_timeout(600)


def visible_texts(page) -> list[str]:
    open_every_accordion(page)
    return page.evaluate(VISIBLE)


# ---------------------------------------------------------------------------- Chinese
def test_every_tab_in_chinese_after_a_run_and_the_switch_keeps_the_screen(browser, page_server,
                                                                          tiny_qwen3):
    """On a zh-CN browser: a dataset with tools and a role table, a short run trained from the
    page to its end, then every one of the seven tabs walked with its accordions open. Every
    text that shows (boxes the server wrote, the progress line, the plan table, chart legends,
    the finish line, the samples' headers) is Chinese, apart from NAMES. Then the header's
    English button: the page comes back in English with the dataset and the finished run still
    on screen, stays English on a reload, and 中文 brings Chinese back."""
    page = open_page(browser, page_server.url, locale="zh-CN", height=900)
    use_model_folder(page, tiny_qwen3)
    tab_at(page, 0)
    page.locator("#example-example_sharegpt").click()
    wait_text(page, "#data-status", "已加载 example_sharegpt.json", timeout=90)
    wait_text(page, "#data-stats", "划分")
    tab_at(page, 1)                     # after the dataset: Auto's preset has set its fields
    wait_text(page, "#preset-why", "20 行")
    steps = text_input(page, "field-max_steps")
    steps.fill("4")
    steps.press("Enter")
    wait_text(page, "#cli-command", "--max-steps 4")
    tab_at(page, 2)
    page.locator("#start").click()
    wait_text(page, "#train-status", "已完成", timeout=240)
    page.wait_for_selector("#start:enabled")
    page.wait_for_timeout(2000)      # the last poll draws the final points and samples
    seen = []
    for index in range(7):
        tab_at(page, index)
        if index == 1:
            shot(page, "model-zh")
        seen += visible_texts(page)
    assert len(seen) > 400, f"only {len(seen)} texts found: the walk no longer finds the page"
    for shown in ("训练了 4 步", "无填充", "训练 loss", "已完成"):
        assert any(shown in text for text in seen), shown
    from studio.plan.hardware import detect_hardware

    machine = (re.findall(r"\w+", detect_hardware().cpu_name)
               + re.findall(r"[A-Za-z]+", Path(tiny_qwen3).name))
    english = english_words(seen, machine)          # the CPU's and the model folder's names
    assert not english, "\n".join(english)

    page.locator("#language-en").click()            # the header's switch reloads in English
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    wait_text(page, "#data-status", "Loaded example_sharegpt.json", timeout=90)
    tab_at(page, 2)
    wait_text(page, "#train-status", "Finished")
    assert "trained 4 steps" in page.locator("#train-status").inner_text()
    page.reload()
    page.wait_for_selector("#tab-data", state="attached")
    wait_text(page, "#tab-data-button", "1 · Data")
    wait_text(page, "#data-status", "Loaded example_sharegpt.json", timeout=120)
    page.locator("#language-zh-CN").click()
    wait_text(page, "#tab-data-button", "1 · 数据")
    wait_text(page, "#data-status", "已加载 example_sharegpt.json", timeout=120)
    page.close()


def test_the_chinese_page_says_the_engines_errors_and_refusals_in_chinese(browser, page_server,
                                                                          tmp_path, tiny_qwen3):
    """What the engine says arrives in Chinese on the Chinese page (issue #40, item 5): a data
    error, a malformed file's line, the config's problem in the checks, and Start refused.
    The expected words are the catalog's Chinese (studio/texts), never the English."""
    from studio.texts.catalog import CATALOG
    from studio.texts.message import Text

    page = open_page(browser, page_server.url, locale="zh-CN")
    use_model_folder(page, tiny_qwen3)
    tab_at(page, 0)
    text_input(page, "data-path").fill(str(tmp_path / "missing.jsonl"))
    page.locator("#data-load").click()
    said = wait_text(page, "#data-status", CATALOG["data.file_not_found"][1].split("{")[0])
    assert "file not found" not in said

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "response": "b"}\n{"instruction": oops}\n')
    page.locator("#data-upload input[type=file]").set_input_files(str(broken))
    said = wait_text(page, "#data-status", "broken.jsonl", timeout=90)
    assert "第 2 行" in said and "line 2" not in said

    problem = Text("config.bounds.lora_r", value=0)
    tab_at(page, 1)
    text_input(page, "field-lora_r").fill("0")
    text_input(page, "field-lora_r").press("Enter")
    said = wait_text(page, "#config-checks", problem.in_language("zh"))
    assert problem not in said
    tab_at(page, 2)
    page.locator("#start").click()
    said = wait_text(page, "#train-status", problem.in_language("zh"))
    assert problem not in said
    page.close()


def test_the_page_in_english_shows_no_chinese(browser, page_server):
    """The same page in an en-US browser: every text found is English, apart from the
    header's 中文 button."""
    page = open_page(browser, page_server.url)
    seen = []
    for index in range(7):
        tab_at(page, index)
        seen += visible_texts(page)
    assert "1 · Data" in seen and "Load" in seen and "▶ Start training" in seen
    assert sorted({t for t in seen if CJK.search(t)}) == ["中文"]
    page.close()


# ---------------------------------------------------------------------------- layout
# Whatever runs off the right edge of the page (inside a box that scrolls sideways is fine).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth, out = [];
  const scrolls = e => { for (let p = e.parentElement; p; p = p.parentElement) {
    const s = getComputedStyle(p);
    if (/(auto|scroll|hidden)/.test(s.overflowX) && p.clientWidth < width) return true; }
    return false; };
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.width && r.right > width + 1 && !scrolls(e)) out.push((e.id || e.className) + '');
  }
  return out.slice(0, 10);
}"""
# A table header cell whose words broke across lines ("LoR A r", "learnin g rate").
BROKEN_HEADERS = """s => [...document.querySelectorAll(s)].filter(e => {
  const line = parseFloat(getComputedStyle(e).lineHeight) || 20;
  return e.innerText.trim() && e.getBoundingClientRect().height > 1.6 * line;
}).map(e => e.innerText)"""
# The parts of a box drawn below its bottom edge (a clipped upload prompt).
CLIPPED = """s => { const box = document.querySelector(s).getBoundingClientRect();
  return [...document.querySelectorAll(s + ' *')].filter(e => e.innerText && e.innerText.trim()
    && e.getClientRects().length && e.getBoundingClientRect().bottom > box.bottom + 1)
    .map(e => e.innerText.trim()); }"""
# The chat pane's name over its messages: the label's box against the scrolling message area.
LABEL_OVER = """s => { const label = document.querySelector(s + ' [data-testid=block-label]');
  const area = document.querySelector(s + ' .bubble-wrap');
  return !!(label && area) && label.getBoundingClientRect().bottom >
    area.getBoundingClientRect().top + 1; }"""


@pytest.mark.parametrize("width", [1440, 600])
def test_every_tab_fits_its_width_and_keeps_its_words(browser, page_server, tiny_qwen3, width):
    """At 1440x900 and at 600 wide, on every tab with two runs listed and compared: nothing runs
    off the page, the Runs table's headers and the config diff keep their words on one line,
    the Evaluate upload box shows its whole prompt, and a chat pane's name sits above its
    messages (they scrolled under it)."""
    service = Service(page_server.runs_dir)
    data = write_jsonl(page_server.runs_dir.parent / "layout.jsonl", QA_ROWS)
    for name, rate in ((f"wide-{width}-a", 1e-3), (f"wide-{width}-b", 1e-4)):
        if not (page_server.runs_dir / name).exists():
            config = FineTuningConfig(**quick_run(tiny_qwen3, str(data), backend="scripted",
                                                  max_steps=4, learning_rate=rate))
            service.start(config, page_server.runs_dir / name, in_process=True).wait()
    page = open_page(browser, page_server.url, width=width, height=900)
    off_page = {}
    for index in range(7):
        tab_at(page, index)
        open_every_accordion(page)
        if index == 5:
            for box in page.locator("#runs-compare label").all()[:2]:
                box.click()
            wait_text(page, "#runs-diff", "learning_rate")
            assert page.evaluate(BROKEN_HEADERS, "#runs-table .header.text") == []
            assert page.evaluate(
                "() => { const d = document.querySelector('#runs-diff-table');"
                " return d.getBoundingClientRect().right <= document.documentElement.clientWidth"
                " || d.parentElement.scrollWidth > d.parentElement.clientWidth; }")
        if index == 4:
            assert page.evaluate(CLIPPED, "#eval-upload") == []
        if index == 3:
            assert not page.evaluate(LABEL_OVER, "#chat-tuned")
            assert not page.evaluate(LABEL_OVER, "#chat-base")
        off_page[index] = page.evaluate(OVERFLOW)
    assert all(not over for over in off_page.values()), off_page
    page.close()
