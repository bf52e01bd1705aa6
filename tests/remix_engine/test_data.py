"""Dataset loading and upload validation: every format, every error, the packaged benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from remix_engine.data import (
    DatasetError,
    DatasetSummary,
    Example,
    detect_format,
    load_examples,
    validate_dataset_bytes,
)
from remix_engine.dataset_limits import MAX_CELL_CHARS, MAX_NESTING_DEPTH, MAX_PARQUET_DECODED_BYTES, MAX_ROW_BYTES
from remix_engine.eval_benchmarks import data_folder

# The math benchmarks shipped inside the package (remix_engine/benchmarks_data/, package data).
BENCHMARKS = Path(str(data_folder()))
BENCHMARK_FILES = ["aime.json", "amc.json", "math.json", "minerva.json", "math500.verl.parquet"]

ROWS = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+3=", "answer": 5, "level": 1}]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def parquet_bytes(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------- formats


def test_load_jsonl(tmp_path: Path) -> None:
    examples = load_examples(write_jsonl(tmp_path / "train.jsonl", ROWS))
    assert examples == [Example("1+1=", "2", {}), Example("2+3=", "5", {"level": 1})]


def test_load_json_list_and_wrapped_list(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"data": ROWS, "version": 2}), encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"rows": ROWS}), encoding="utf-8")
    expected = [("1+1=", "2"), ("2+3=", "5")]
    for name in ("a.json", "b.json", "c.json"):
        assert [(e.prompt, e.answer) for e in load_examples(tmp_path / name)] == expected


def test_load_parquet(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_bytes(parquet_bytes([{"q": "What is 2*3?", "a": 6.0}, {"q": "What is 1/2?", "a": 0.5}]))
    examples = load_examples(path, prompt_field="q", answer_field="a")
    assert [(e.prompt, e.answer) for e in examples] == [("What is 2*3?", "6"), ("What is 1/2?", "0.5")]


def test_custom_fields_and_dotted_path(tmp_path: Path) -> None:
    rows = [{"text": "p", "meta": {"gt": "7"}, "answer": "ignored"}]
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", rows), prompt_field="text", answer_field="meta.gt")
    assert examples == [Example("p", "7", {"answer": "ignored"})]


def test_blank_lines_and_bom_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "p", "answer": "1"}\n\n  \n{"prompt": "q", "answer": "2"}\n')
    assert [e.answer for e in load_examples(path)] == ["1", "2"]


def test_aliases_chat_prompt_and_answer_lists(tmp_path: Path) -> None:
    rows = [
        {"question": "Q1", "final_answer": ["1/2", "0.5"]},
        {"question": "Q2", "final_answer": 3},
    ]
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", rows))
    assert (examples[0].prompt, examples[0].answer, examples[0].extra) == (
        "Q1",
        "1/2",
        {"answer_alternatives": ["0.5"]},
    )
    verl = [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "reward_model": {"ground_truth": "4", "style": "rule"},
        }
    ]
    (tmp_path / "v.parquet").write_bytes(parquet_bytes(verl))
    assert [(e.prompt, e.answer) for e in load_examples(tmp_path / "v.parquet")] == [("What is 2+2?", "4")]


def test_solution_alias_takes_the_boxed_answer(tmp_path: Path) -> None:
    rows = [{"problem": "P", "solution": "Since $x=\\frac{1}{2}$, we get $\\boxed{\\frac{1}{2}}$."}]
    assert load_examples(write_jsonl(tmp_path / "d.jsonl", rows))[0].answer == "\\frac{1}{2}"
    rows = [{"problem": "P", "solution": "no box"}]
    with pytest.raises(DatasetError, match=r"d.jsonl line 1: field 'solution' must contain a \\boxed\{\} answer"):
        load_examples(write_jsonl(tmp_path / "d.jsonl", rows))


# --------------------------------------------------------------------------- errors


def error_of(data: bytes, fmt: str, **fields: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        validate_dataset_bytes(data, fmt, **fields)
    return info.value


def test_invalid_json_line_number(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b" "answer": "2"}\n', encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_examples(path)
    assert str(info.value).startswith("train.jsonl line 3: invalid JSON: Expecting ',' delimiter")
    assert info.value.line == 3


def test_invalid_json_document_line_number() -> None:
    error = error_of(b'[\n {"prompt": "a", "answer": "1"},\n {"prompt": }\n]', "json")
    assert error.line == 3 and str(error).startswith("line 3: invalid JSON: Expecting value")


def test_missing_field(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "answer": str(i)} for i in range(6)] + [{"prompt": "p6"}]
    with pytest.raises(DatasetError) as info:
        load_examples(write_jsonl(tmp_path / "train.jsonl", rows))
    assert str(info.value) == "train.jsonl line 7: missing field 'answer'"
    assert (info.value.line, info.value.field, info.value.reason) == (7, "answer", "missing field 'answer'")


def test_missing_field_everywhere_without_alias() -> None:
    error = error_of(json.dumps([{"text": "a", "answer": "1"}]).encode(), "json")
    assert str(error) == "row 1: missing field 'prompt'" and error.field == "prompt"


def test_missing_custom_field_in_json_row(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps([{"q": "a", "a": "1"}, {"q": "b"}]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"^d.json row 2: missing field 'a'$"):
        load_examples(tmp_path / "d.json", prompt_field="q", answer_field="a")


def test_non_utf8_bytes() -> None:
    error = error_of(b'{"prompt": "a", "answer": "1"}\n{"prompt": "\xff", "answer": "2"}\n', "jsonl")
    assert str(error) == "line 2: not valid UTF-8" and error.line == 2
    assert error_of(b'[{"prompt": "\xfe"}]', "json").reason == "not valid UTF-8"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(b"", "jsonl"), (b"\n  \n", "jsonl"), (b"", "json"), (b"[]", "json"), (b'{"data": []}', "json")],
)
def test_empty_dataset(data: bytes, fmt: str) -> None:
    assert str(error_of(data, fmt)) == "empty dataset"


def test_empty_parquet() -> None:
    empty = pa.Table.from_pylist([], schema=pa.schema([("prompt", pa.string()), ("answer", pa.string())]))
    sink = pa.BufferOutputStream()
    pq.write_table(empty, sink)
    assert error_of(sink.getvalue().to_pybytes(), "parquet").reason == "empty dataset"


def test_empty_file_on_disk(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_bytes(b"")
    with pytest.raises(DatasetError, match="^train.jsonl: empty dataset$"):
        load_examples(tmp_path / "train.jsonl")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": 3, "answer": "1"}, "field 'prompt' must be a non-empty string"),
        ({"prompt": "   ", "answer": "1"}, "field 'prompt' must be a non-empty string"),
        ({"prompt": "p", "answer": ""}, "field 'answer' must be a non-empty string or number"),
        ({"prompt": "p", "answer": None}, "field 'answer' must be a non-empty string or number"),
        ({"prompt": "p", "answer": {"x": 1}}, "field 'answer' must be a non-empty string or number"),
        ({"prompt": "p", "answer": True}, "field 'answer' must be a non-empty string or number"),
    ],
)
def test_wrong_types(row: dict, message: str) -> None:
    data = (json.dumps({"prompt": "ok", "answer": "1"}) + "\n" + json.dumps(row) + "\n").encode()
    error = error_of(data, "jsonl")
    assert str(error) == f"line 2: {message}" and error.line == 2


def test_row_that_is_not_an_object() -> None:
    assert (
        str(error_of(b'{"prompt": "a", "answer": "1"}\n[1, 2]\n', "jsonl"))
        == "line 2: expected a JSON object, got list"
    )


def test_json_without_a_list() -> None:
    assert "expected a JSON list of objects" in str(error_of(b'{"a": 1}', "json"))


def test_invalid_parquet_bytes() -> None:
    assert error_of(b"PAR1 not really", "parquet").reason.startswith("not a valid parquet file")


# --------------------------------------------------------------------------- limits

GOOD_LINE = b'{"prompt": "1+1=", "answer": "2"}\n'


def nested_row(depth: int) -> bytes:
    """A valid row whose extra column nests `depth` lists, so the row itself reaches depth + 1."""
    return b'{"prompt": "1+1=", "answer": "2", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH, 990, 100_000])
def test_jsonl_nesting_deeper_than_the_limit_names_the_line(depth: int) -> None:
    # 990 levels is about 2 KB and used to crash the parser with a RecursionError.
    error = error_of(GOOD_LINE + nested_row(depth) + b"\n", "jsonl")
    assert (error.line, error.reason) == (2, f"nested more than {MAX_NESTING_DEPTH} levels deep")
    assert str(error) == f"line 2: nested more than {MAX_NESTING_DEPTH} levels deep"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # The row object is level 1, so an extra column may nest MAX_NESTING_DEPTH - 1 lists.
    deepest = nested_row(MAX_NESTING_DEPTH - 1)
    assert validate_dataset_bytes(GOOD_LINE + deepest + b"\n", "jsonl").num_rows == 2
    assert validate_dataset_bytes(b"[" + GOOD_LINE + b"," + deepest + b"]", "json").num_rows == 2


@pytest.mark.parametrize(("depth", "line", "unit"), [(MAX_NESTING_DEPTH, 2, "row"), (100_000, 3, "line")])
def test_json_nesting_deeper_than_the_limit_names_the_row_or_line(depth: int, line: int, unit: str) -> None:
    # Parsed rows are checked one by one (row 2); a document too deep to parse names its line.
    document = b'{"data": [\n' + GOOD_LINE.strip() + b",\n" + nested_row(depth) + b"\n]}"
    error = error_of(document, "json")
    assert (error.line, error.reason) == (line, f"nested more than {MAX_NESTING_DEPTH} levels deep")
    assert str(error).startswith(f"{unit} {line}: ")


def test_a_line_over_the_size_limit_is_refused_before_parsing() -> None:
    long_line = b'{"prompt": "1+1=", "answer": "2", "pad": "' + b"x" * MAX_ROW_BYTES + b'"}\n'
    error = error_of(GOOD_LINE + long_line, "jsonl")
    assert error.line == 2
    assert error.reason == f"line is {len(long_line) - 1} bytes, over the limit of {MAX_ROW_BYTES} bytes"


def test_a_text_value_over_the_cell_limit_names_its_row_in_every_format() -> None:
    long_row = {"prompt": "1+1=", "answer": "2", "notes": "y" * (MAX_CELL_CHARS + 1)}
    reason = f"a text value is {MAX_CELL_CHARS + 1} characters, over the limit of {MAX_CELL_CHARS}"
    good = {"prompt": "2+2=", "answer": "4", "notes": ""}
    jsonl = (json.dumps(good) + "\n" + json.dumps(long_row) + "\n").encode()
    for data, fmt, unit in (
        (jsonl, "jsonl", "line"),
        (json.dumps([good, long_row]).encode(), "json", "row"),
        (parquet_bytes([good, long_row]), "parquet", "row"),
    ):
        error = error_of(data, fmt)
        assert (error.line, error.reason) == (2, reason), fmt
        assert str(error).startswith(f"{unit} 2: "), fmt


def test_a_json_row_over_the_size_limit_names_its_row() -> None:
    # Every text is under the cell limit, but together they are more than a row may hold.
    columns = MAX_ROW_BYTES // MAX_CELL_CHARS + 1
    big_row = {"prompt": "1+1=", "answer": "2", **{f"c{i}": "z" * MAX_CELL_CHARS for i in range(columns)}}
    error = error_of(json.dumps([{"prompt": "a", "answer": "1"}, big_row]).encode(), "json")
    assert (error.line, error.reason) == (2, f"row is larger than the limit of {MAX_ROW_BYTES} bytes of text")


def test_a_parquet_file_that_decodes_past_the_limit_is_refused() -> None:
    # One dictionary entry repeated: a small file that decodes to more than the limit.
    cell = "w" * (MAX_CELL_CHARS - 1)
    rows = MAX_PARQUET_DECODED_BYTES // len(cell) + 1
    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([cell]))
    table = pa.table({"prompt": column, "answer": pa.array(["1"] * rows)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    assert len(data) < 10 * 1024 * 1024
    error = error_of(data, "parquet")
    assert error.line is None
    assert error.reason.startswith(f"parquet data decodes to more than {MAX_PARQUET_DECODED_BYTES} bytes")


@pytest.mark.parametrize(("data", "fmt"), [(b'{"prompt": "a", "answer": 1' + b"0" * 5000 + b"}\n", "jsonl")])
def test_an_integer_python_refuses_to_parse_is_invalid_json(data: bytes, fmt: str) -> None:
    error = error_of(GOOD_LINE + data, fmt)
    assert error.line == 2 and error.reason.startswith("invalid JSON: Exceeds the limit (4300 digits)")
    assert error_of(b"[" + data.strip() + b"]", "json").reason.startswith("invalid JSON: Exceeds the limit")


def test_unknown_format_and_extension(tmp_path: Path) -> None:
    assert "unknown dataset format 'csv'" in str(error_of(b"a,b", "csv"))
    with pytest.raises(DatasetError, match="unsupported file extension '.csv'"):
        load_examples(tmp_path / "train.csv")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="^missing.jsonl: cannot read file"):
        load_examples(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("x/y.json", "json"),
        ("t.parquet", "parquet"),
        ("t.pq", "parquet"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["data.csv", "data", "data.json.gz"])
def test_detect_format_rejects(name: str) -> None:
    with pytest.raises(DatasetError, match="unsupported file extension"):
        detect_format(name)


# --------------------------------------------------------------------------- validation summary


def test_validate_dataset_bytes_summary() -> None:
    rows = [{"prompt": "x" * 800, "answer": i, "id": i} for i in range(7)]
    data = "\n".join(json.dumps(row) for row in rows).encode()
    summary = validate_dataset_bytes(data, "jsonl", "prompt", "answer")
    assert isinstance(summary, DatasetSummary)
    assert summary.num_rows == 7 and summary.columns == ["prompt", "answer", "id"]
    assert summary.preview == [{"prompt": "x" * 500, "answer": str(i)} for i in range(5)]


def test_validate_dataset_bytes_parquet_columns_and_source() -> None:
    summary = validate_dataset_bytes(parquet_bytes(ROWS[:1]), "parquet")
    assert summary.num_rows == 1 and summary.columns == ["prompt", "answer"]
    unlabelled = parquet_bytes([{"prompt": "p", "result": "1"}])  # no requested field and no alias
    error = error_of(unlabelled, "parquet", answer_field="label")
    assert str(error) == "row 1: missing field 'label'"
    with pytest.raises(DatasetError, match="^upload.parquet row 1: missing field 'label'$"):
        validate_dataset_bytes(unlabelled, "parquet", answer_field="label", source="upload.parquet")


def test_requested_field_falls_back_to_alias() -> None:
    # "label" is absent from every row, so the known alias "answer" is used.
    summary = validate_dataset_bytes(parquet_bytes(ROWS[:1]), "parquet", answer_field="label")
    assert summary.preview == [{"prompt": "1+1=", "answer": "2"}]


def test_validate_dataset_bytes_max_rows() -> None:
    data = "\n".join(json.dumps(row) for row in ROWS).encode()
    assert validate_dataset_bytes(data, "jsonl", max_rows=2).num_rows == 2
    with pytest.raises(DatasetError, match="too many rows: 2 > 1"):
        validate_dataset_bytes(data, "jsonl", max_rows=1)


def test_loader_and_validator_agree(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    summary = validate_dataset_bytes(path.read_bytes(), detect_format(path.name))
    examples = load_examples(path)
    assert summary.num_rows == len(examples)
    assert summary.preview == [{"prompt": e.prompt, "answer": e.answer} for e in examples]


# --------------------------------------------------------------------------- packaged benchmark files


@pytest.mark.parametrize("name", BENCHMARK_FILES)
def test_benchmark_files_load_as_is(name: str) -> None:
    path = BENCHMARKS / name
    assert path.is_file(), f"benchmark data missing from the package: expected {path}"
    examples = load_examples(path)
    assert len(examples) > 0
    assert all(e.prompt.strip() and e.answer.strip() for e in examples)


def test_benchmark_values() -> None:
    assert BENCHMARKS.is_dir(), f"benchmark data missing from the package: expected {BENCHMARKS}"
    assert load_examples(BENCHMARKS / "amc.json")[0].answer == "142"  # float 142.0 in the file
    minerva = load_examples(BENCHMARKS / "minerva.json")
    assert minerva[0].answer == "9.6"  # a list of forms with a trailing newline in the file
    verl = load_examples(BENCHMARKS / "math500.verl.parquet")
    plain = load_examples(BENCHMARKS / "math.json")
    assert [e.answer for e in verl] == [e.answer for e in plain]
    assert verl[0].prompt.startswith(plain[0].prompt)
