"""The builtin evaluation sets: standard math benchmarks shipped inside the package, selected by name.

A job names them in `eval_sets` (``eval_sets: [aime24, math500]`` or ``{name: aime24, size: 10,
samples: 4}``); each is evaluated and reported on its own, as ``eval_<name>/accuracy`` and, with
avg@k sampling, ``eval_<name>/avg_pass1``. Any tenant may select them: they are files of the
installed package (``remix_engine/benchmarks_data/``, listed in pyproject's package-data), never
paths on the worker chosen by the caller.

Each file is read by ``remix_engine.data.load_examples``, which already turns every layout into
one prompt and one answer string; ``answers`` says which of its rules applies:

- ``"string"``: the answer is kept as written, stripped (AIME, MATH500);
- ``"number"``: a JSON number, written without a fractional part when integral (AMC's ``142.0``
  is ``"142"``);
- ``"forms"``: a list of equivalent forms (Minerva); the first, stripped, is the answer and the
  others are kept in ``Example.extra["answer_alternatives"]``.

This module imports only the standard library (and ``remix_engine.data`` when a set is loaded):
the API process checks names against it without loading torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from remix_engine.data import Example

DATA_PACKAGE = "remix_engine"
DATA_FOLDER = "benchmarks_data"  # remix_engine/benchmarks_data/, shipped as package data


@dataclass(frozen=True)
class Benchmark:
    """One builtin evaluation set: its packaged file and how its rows become prompts and answers."""

    name: str  # what a job writes in eval_sets; also the metric prefix (eval_<name>/accuracy)
    title: str
    filename: str  # in remix_engine/benchmarks_data/
    rows: int  # problems in the file
    answers: Literal["string", "number", "forms"]
    prompt_field: str = "problem"
    answer_field: str = "answer"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("aime24", "AIME 2024 (AIME I and II)", "aime.json", 30, "string"),
        Benchmark("amc23", "AMC 2023 (AMC 12 problems of 2022 and 2023)", "amc.json", 83, "number"),
        Benchmark("math500", "MATH500 (Lightman et al. subset of the MATH test set)", "math.json", 500, "string"),
        Benchmark("minerva", "Minerva math (OCWCourses)", "minerva.json", 272, "forms"),
    )
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(BENCHMARKS)


def unknown_benchmark_message(name: str) -> str:
    return f"unknown builtin eval set {name!r}; available: {', '.join(BENCHMARK_NAMES)}"


def benchmark(name: str) -> Benchmark:
    """The registry entry of `name`; KeyError naming the available sets if there is none."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(unknown_benchmark_message(name)) from None


def data_folder() -> Traversable:
    """remix_engine/benchmarks_data/ as the installed package holds it (a folder, or a folder in a zip)."""
    return resources.files(DATA_PACKAGE).joinpath(DATA_FOLDER)


def data_file(filename: str) -> Traversable:
    """A file of remix_engine/benchmarks_data/ as the installed package holds it."""
    return data_folder().joinpath(filename)


@contextmanager
def benchmark_path(name: str) -> Iterator[Path]:
    """A filesystem path to the set's file while the context lasts (extracted if the package is zipped)."""
    with resources.as_file(data_file(benchmark(name).filename)) as path:
        yield path


def load_benchmark(name: str, size: int | None = None) -> list[Example]:
    """The set's examples in file order, the first `size` of them when given; KeyError if unknown."""
    from remix_engine.data import load_examples

    spec = benchmark(name)
    with benchmark_path(name) as path:
        examples = load_examples(path, prompt_field=spec.prompt_field, answer_field=spec.answer_field)
    return examples if size is None else examples[:size]
