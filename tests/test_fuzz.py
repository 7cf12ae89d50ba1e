"""Fuzzing (#15 item 7): the data readers and the config loader, fed random bytes, truncated
JSON, wrong types, huge cells and odd encodings, raise nothing but the studio's own errors.

Few examples and no deadline, so the whole file stays within seconds on two cores; hypothesis
keeps the failing examples it finds in its database and tries them first next time.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.config import ConfigError, FineTuningConfig
from studio.data import DataError, load_rows

FEW = settings(max_examples=40, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SUFFIXES = [".json", ".jsonl", ".csv", ".tsv", ".parquet"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
rows = st.lists(st.dictionaries(st.sampled_from(["instruction", "response", "text", "messages",
                                                 "input", "output", "x"]), json_values,
                                max_size=4), max_size=6)


def read(data: bytes, suffix: str):
    """load_rows on a file holding `data`: rows, or a DataError; anything else fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(data)
        try:
            return load_rows(str(path))
        except DataError:
            return None


# ---------------------------------------------------------------------------- readers
@FEW
@given(st.binary(max_size=300), st.sampled_from(SUFFIXES))
def test_random_bytes_in_any_format_give_rows_or_a_data_error(data, suffix):
    """Random bytes under each supported suffix."""
    read(data, suffix)


@FEW
@given(rows, st.floats(0, 1), st.sampled_from([".json", ".jsonl"]))
def test_truncated_json_gives_rows_or_a_data_error(values, cut, suffix):
    """Rows of any JSON values, cut anywhere (a crash mid-write, a partial upload): what is read
    is never more rows than were written."""
    text = json.dumps(values) if suffix == ".json" else \
        "".join(json.dumps(v) + "\n" for v in values)
    data = text.encode()
    got = read(data[:int(len(data) * cut)], suffix)
    assert got is None or 1 <= len(got) <= max(1, len(values))


@FEW
@given(rows, st.sampled_from([".json", ".jsonl"]))
def test_rows_of_any_shape_and_type_give_rows_or_a_data_error(values, suffix):
    """Whole JSON of wrong types: lists, numbers and objects where text is expected. Rows that
    are read are the rows written, under the keys they were written with."""
    text = json.dumps(values) if suffix == ".json" else \
        "".join(json.dumps(v) + "\n" for v in values)
    got = read(text.encode(), suffix)
    if got is not None:
        assert len(got) == len(values)
        assert set(got.column_names) <= {key for row in values for key in row}


@FEW
@given(st.text(max_size=60), st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "cp1252",
                                               "utf-8-sig"]), st.sampled_from(SUFFIXES[:4]))
def test_odd_encodings_give_rows_or_a_data_error(text, encoding, suffix):
    """Text in encodings other than UTF-8 (and with a byte-order mark)."""
    cell = text.replace('"', "'")
    body = {".json": json.dumps([{"instruction": cell, "response": "r"}], ensure_ascii=False),
            ".jsonl": json.dumps({"instruction": cell, "response": "r"}, ensure_ascii=False),
            ".csv": f'instruction,response\n"{cell}",r\n',
            ".tsv": f'instruction\tresponse\n"{cell}"\tr\n'}[suffix]
    got = read(body.encode(encoding, errors="replace"), suffix)
    if got is not None and encoding in ("utf-8", "utf-8-sig") and suffix in (".json", ".jsonl"):
        assert got[0]["instruction"] == cell       # read in UTF-8, the text comes back whole


def test_a_huge_cell_is_read():
    """A 20 MB cell in CSV and JSONL is data, not a crash."""
    big = "x" * 20_000_000
    assert len(read(f"instruction,response\n{big},r\n".encode(), ".csv")) == 1
    assert len(read(json.dumps({"instruction": big, "response": "r"}).encode(), ".jsonl")) == 1


# ---------------------------------------------------------------------------- the config loader
FIELDS = list(FineTuningConfig.__dataclass_fields__)


@FEW
@given(st.dictionaries(st.sampled_from(FIELDS + ["not_a_field"]), json_values, max_size=5))
def test_a_config_of_any_values_loads_or_is_a_config_error(values):
    """Any field given any JSON value: a config, or a ConfigError naming the field."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
        try:
            config = FineTuningConfig.load(path)
        except ConfigError as e:
            assert any(name in str(e) for name in values), e
            return
        config.validate()          # and validating it says problems, never raises


@FEW
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_a_config_file_are_a_config_error(data):
    """Bytes that are not YAML, YAML that is not a mapping, text in another encoding."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(data)
        try:
            FineTuningConfig.load(path).validate()
        except ConfigError:
            pass


# ---------------------------------------------------------------------------- run state
event_lines = st.lists(st.one_of(
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.fixed_dictionaries({"kind": st.sampled_from(["train", "eval", "done", "status", "x"]),
                           "step": json_values, "time": json_values,
                           "data": st.dictionaries(st.sampled_from(
                               ["loss", "eval_loss", "max_steps", "tokens_per_s", "message",
                                "epoch", "state"]), json_values | st.just(float("inf")),
                               max_size=4) | json_values}).map(json.dumps)), max_size=6)


@FEW
@given(event_lines, st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(st.sampled_from(["state", "pid", "pid_started", "started", "ended",
                                          "step", "reason"]), json_values
                         ).map(lambda v: json.dumps(v).encode()))
def test_any_status_and_metrics_files_are_read_without_an_error(lines, status):
    """Whatever status.json and metrics.jsonl hold, listing, summing up, drawing the curves and
    watching the run go on."""
    from studio.runs.history import curves, summarize
    from studio.runs.store import list_runs
    from studio.runs.jobs import Job

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        FineTuningConfig(backend="scripted").save(run / "config.yaml")
        (run / "status.json").write_bytes(status)
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8",
                                           errors="replace")
        assert list_runs(Path(tmp))[0].status.state
        summarize(run), curves(run), Job(run).events_since(0), Job(run).status
