"""Builtin eval sets: packaged files, the registry, selection by name in the config, evaluation of each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_trainer import Recorder
from pydantic import ValidationError

from remix_engine.config import BuiltinEvalSetSpec, EvalSetSpec, TrainConfig
from remix_engine.data import load_examples
from remix_engine.eval_benchmarks import (
    BENCHMARK_NAMES,
    BENCHMARKS,
    benchmark,
    benchmark_path,
    data_file,
    data_folder,
    load_benchmark,
)
from remix_engine.splits import load_extra_eval_sets
from remix_engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_ROWS = {"aime24": 30, "amc23": 83, "math500": 500, "minerva": 272}  # benchmarks_data/README.md
PACKAGED_FILES = {"aime.json", "amc.json", "math.json", "minerva.json", "math500.verl.parquet", "README.md"}


# --------------------------------------------------------------------------- registry and files


def test_the_registry_names_the_four_standard_sets() -> None:
    assert BENCHMARK_NAMES == ("aime24", "amc23", "math500", "minerva")
    assert {name: spec.rows for name, spec in BENCHMARKS.items()} == DOCUMENTED_ROWS


@pytest.mark.parametrize("name", list(DOCUMENTED_ROWS))
def test_each_builtin_set_loads_with_its_documented_row_count(name: str) -> None:
    examples = load_benchmark(name)
    assert len(examples) == DOCUMENTED_ROWS[name]
    assert all(e.prompt.strip() and e.answer.strip() for e in examples)
    assert all(e.answer == e.answer.strip() for e in examples)  # one normalised answer string each


def test_answers_are_normalised_to_one_string() -> None:
    amc = load_benchmark("amc23")
    assert amc[0].answer == "142"  # 142.0 in the file
    assert all("." not in e.answer for e in amc)  # AMC answers are integers
    minerva = load_benchmark("minerva")
    raw = json.loads(data_file("minerva.json").read_text(encoding="utf-8"))
    # A list of equivalent forms: the first (stripped) is the answer, the others are kept aside.
    assert [e.answer for e in minerva] == [row["answer"][0].strip() for row in raw]
    assert minerva[0].answer == "9.6"
    with_alternatives = [(e, row) for e, row in zip(minerva, raw, strict=True) if len(row["answer"]) > 1]
    assert len(with_alternatives) == 75
    assert all(e.extra["answer_alternatives"] == [a.strip() for a in row["answer"][1:]] for e, row in with_alternatives)
    assert load_benchmark("aime24")[0].answer == "204"


def test_size_keeps_the_first_problems_in_file_order() -> None:
    assert load_benchmark("math500", 3) == load_benchmark("math500")[:3]


def test_unknown_name_lists_the_available_sets() -> None:
    with pytest.raises(KeyError, match="unknown builtin eval set 'gsm8k'; available: aime24, amc23, math500, minerva"):
        benchmark("gsm8k")


def test_the_files_are_the_package_data_and_unchanged_copies() -> None:
    folder = data_folder()
    assert {entry.name for entry in folder.iterdir() if entry.is_file()} == PACKAGED_FILES
    assert Path(str(folder)) == REPO / "remix_engine" / "benchmarks_data"
    readme = data_file("README.md").read_text(encoding="utf-8")
    for name, rows in DOCUMENTED_ROWS.items():
        assert f"`{benchmark(name).filename}` | `{name}` |" in readme and f"| {rows} |" in readme
    with benchmark_path("math500") as path:
        assert path.is_file() and load_examples(path) == load_benchmark("math500")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the sources (the work tree gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("remix_engine", "service", "worker", "remix_client"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("remix_rft-*.whl")
    return built


def test_an_installed_wheel_ships_the_sets(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"remix_engine/benchmarks_data/{name}" for name in PACKAGED_FILES} <= names
    # Imported from the wheel itself (zipimport): importlib.resources finds the files inside the
    # archive, and every set loads with its row count.
    script = (
        "import json, remix_engine\n"
        "from remix_engine.eval_benchmarks import BENCHMARK_NAMES, load_benchmark\n"
        "print(json.dumps({'module': remix_engine.__file__,"
        " 'rows': {n: len(load_benchmark(n)) for n in BENCHMARK_NAMES}}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=wheel.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["module"].startswith(str(wheel))
    assert found["rows"] == DOCUMENTED_ROWS


# --------------------------------------------------------------------------- config


def test_eval_sets_take_builtin_names_and_objects() -> None:
    cfg = TrainConfig.model_validate(
        {"eval_sets": ["aime24", {"name": "amc23", "size": 10, "samples": 4}, {"name": "math500"}]}
    )
    assert cfg.eval_sets == [
        BuiltinEvalSetSpec(name="aime24"),
        BuiltinEvalSetSpec(name="amc23", size=10, samples=4),
        BuiltinEvalSetSpec(name="math500"),
    ]
    stored = cfg.model_dump(mode="json")
    assert stored["eval_sets"][0] == {"name": "aime24", "size": None, "samples": None}
    assert TrainConfig.model_validate(stored) == cfg  # a stored config validates back to itself
    file_set = TrainConfig.model_validate({"eval_sets": [{"name": "bench", "path": "/data/b.jsonl"}, "minerva"]})
    assert isinstance(file_set.eval_sets[0], EvalSetSpec) and file_set.eval_sets[0].size == 500
    assert TrainConfig.model_validate(file_set.model_dump(mode="json")) == file_set


def _errors(config: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(config)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("eval_sets", "where", "says"),
    [
        pytest.param(["aime24", "gsm8k"], "eval_sets.1.name", "available: aime24, amc23, math500, minerva", id="name"),
        pytest.param([{"name": "aime"}], "eval_sets.0.name", "unknown builtin eval set 'aime'", id="unknown-object"),
        pytest.param([{"name": "aime24", "size": "3"}], "eval_sets.0.size", "valid integer", id="size-str"),
        pytest.param([{"name": "aime24", "size": 0}], "eval_sets.0.size", "greater than or equal to 1", id="size-0"),
        pytest.param([{"name": "aime24", "samples": True}], "eval_sets.0.samples", "valid integer", id="samples-bool"),
        pytest.param([{"name": "aime24", "samples": 65}], "eval_sets.0.samples", "less than or equal to 64", id="k"),
        pytest.param([{"name": "aime24", "prompt_field": "q"}], "eval_sets.0.prompt_field", "Extra", id="fields"),
        pytest.param([7], "eval_sets.0", "builtin name", id="number"),
        pytest.param([["aime24"]], "eval_sets.0", "builtin name", id="list"),
        pytest.param(["aime24", {"name": "aime24", "size": 3}], "eval_sets", "more than once", id="twice"),
        pytest.param([{"name": "math500", "path": "/d/m.json"}, "math500"], "eval_sets", "more than once", id="clash"),
    ],
)
def test_bad_eval_sets_are_refused_at_their_field(eval_sets: list, where: str, says: str) -> None:
    errors = _errors({"eval_sets": eval_sets})
    assert [field for field, _ in errors] == [where]
    assert says in errors[0][1]


def test_the_schema_lists_the_builtin_names() -> None:
    items = TrainConfig.model_json_schema()["properties"]["eval_sets"]["items"]["anyOf"]
    assert {"enum": list(BENCHMARK_NAMES), "type": "string"} in items


def test_each_set_is_loaded_cut_to_its_size_with_its_own_k() -> None:
    cfg = TrainConfig.model_validate(
        {"eval_sets": ["aime24", {"name": "minerva", "size": 5, "samples": 0}], "eval_samples": 3}
    )
    (aime, minerva) = load_extra_eval_sets(cfg)
    assert (aime.name, len(aime.examples), aime.samples) == ("aime24", 30, 3)  # the job's eval_samples
    assert (minerva.name, len(minerva.examples), minerva.samples) == ("minerva", 5, 0)
    assert minerva.examples == load_benchmark("minerva")[:5]


# --------------------------------------------------------------------------- end to end


def test_a_small_chat_model_reports_each_builtin_set(tmp_path: Path, qwen_standin: Path) -> None:
    """A Qwen2.5-style stand-in (its 2048 positions hold a whole AIME problem in its chat template; the
    builtin tiny model's 64 do not), one training step, two builtin sets cut to a few problems."""
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": str(qwen_standin)},
            "data": {"eval_size": 4, "max_prompt_tokens": 1024},
            "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4},
            "algorithm": {"name": "grpo", "minibatch_size": 4},
            "eval_sets": [{"name": "aime24", "size": 3}, {"name": "math500", "size": 2, "samples": 2}],
            "total_steps": 1,
            "checkpoint_every": 1,
        }
    )

    callbacks = Recorder()
    result = Trainer(cfg, tmp_path / "run", callbacks=callbacks).train()
    last = callbacks.steps[-1]
    assert last["eval_aime24/num_prompts"] == 3 and 0.0 <= last["eval_aime24/accuracy"] <= 1.0
    assert "eval_aime24/avg_pass1" not in last  # eval_samples 0 and no samples of its own: greedy only
    assert last["eval_math500/num_prompts"] == 2 and 0.0 <= last["eval_math500/accuracy"] <= 1.0
    assert last["eval_math500/k"] == 2 and 0.0 <= last["eval_math500/avg_pass1"] <= 1.0
    assert last["eval_num_prompts"] == 4  # the primary held-out set is reported apart
    assert result.eval_before["aime24/num_prompts"] == 3
