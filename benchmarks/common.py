"""Pieces shared by the benchmarks: machine description, report sections, toy-task configs, a step recorder.

Each benchmark writes its raw results (JSON), a markdown table and PNG plots, and, in a full run,
replaces its own section of docs/benchmarks.md (between `<!-- begin:NAME -->` and `<!-- end:NAME -->`
markers) with the exact command, the machine, the date, the table and the plot. Quick runs write
under var/bench/ and never touch docs/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remix_engine.callbacks import NullCallbacks
from remix_engine.config import (
    REASONING_DATASET_ID,
    TINY_MODEL_ID,
    TINY_REASONER_MODEL_ID,
    TOY_DATASET_ID,
    TrainConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_PATH = REPO_ROOT / "docs" / "benchmarks.md"
FIGURES_DIR = REPO_ROOT / "docs" / "benchmarks"
# Quick runs (and scratch files of full runs) go here; the smoke test points it at a temporary directory.
QUICK_DIR = Path(os.environ.get("REMIX_BENCH_QUICK_DIR") or REPO_ROOT / "var" / "bench")

# Sections of docs/benchmarks.md in reading order; a benchmark only ever rewrites its own.
SECTIONS = {
    "rollout_efficiency": "Rollout efficiency",
    "analysis_signals": "Analysis signals and ablation of remix-grpo",
    "trl_comparison": "Comparison with TRL's GRPOTrainer",
    "engine_throughput": "Engine throughput and step-time breakdown",
    "api_load": "API latency under load",
    "api_reads": "API read latency at a fixed rate",
}
SECTIONS |= {
    f"{name}_reasoning": f"{title}: reasoning task"
    for name, title in list(SECTIONS.items())
    if not name.startswith("api_")
}
REPORT_INTRO = """# Benchmarks

Every number below was measured by a script in `benchmarks/`; each section gives the exact command,
the machine and the date. Re-running a script with the same command rewrites its section. Each script
also has a `--quick` mode (a few seconds, used by `tests/benchmarks/test_smoke.py`) that writes under
`var/bench/` and leaves this file alone. The toy task everywhere is the builtin 2-digit addition task
(`builtin:addition`) on the builtin tiny Llama (`builtin:tiny-arith`, ~0.7M parameters, character
tokenizer, supervised-pretrained to a moderate accuracy); held-out accuracy is greedy Pass@1. Sections
marked "reasoning task" run the same benchmark (`--task reasoning`) on the builtin reasoning task
(`builtin:column-addition`: 3-digit additions worked out column by column in 30-80 tokens before the boxed
sum) with the builtin reasoning model (`builtin:tiny-reasoner`, ~0.17M parameters, same tokenizer), where
generating the responses is most of a training step, as in real reasoning RFT.
"""
ROLLOUT_EFFICIENCY_PLACEHOLDER = """_Placeholder: filled from `python benchmarks/rollout_efficiency.py`
(fresh rollouts and wall time to a target accuracy for remix-grpo, grpo, remix-ppo and ppo over seeds; plot
`docs/benchmarks/rollout_efficiency.png`)._
"""


# ----------------------------------------------------------------------------------------- context


def machine_description() -> str:
    """CPU model, usable cores, memory, accelerator and library versions, in one line."""
    import torch
    import transformers

    cpu = _cpu_model() or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {cores} CPU cores, {memory_gib:.0f} GiB RAM, {accelerator}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def command_line(module: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def output_paths(name: str, quick: bool) -> tuple[Path, Path]:
    """(data dir, figure dir): docs/benchmarks/ for full runs, QUICK_DIR/<name>/ for quick ones."""
    if quick:
        out = QUICK_DIR / name
        out.mkdir(parents=True, exist_ok=True)
        return out, out
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    return FIGURES_DIR, FIGURES_DIR


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------ report


def section_text(*, command: str, machine: str, body: str) -> str:
    return f"**Command:** `{command}`  \n**Machine:** {machine}  \n**Date:** {today()}\n\n{body.strip()}\n"


def update_report_section(name: str, text: str, path: Path = REPORT_PATH) -> None:
    """Replace the body of section `name` in docs/benchmarks.md, creating the file or section if needed."""
    report = path.read_text() if path.exists() else _skeleton()
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    if begin not in report or end not in report:
        report = report.rstrip() + f"\n\n## {SECTIONS.get(name, name)}\n\n{begin}\n{end}\n"
    head, rest = report.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def publish(
    name: str,
    argv: list[str] | None,
    *,
    report: bool,
    data_dir: Path,
    data: dict[str, Any],
    text: str,
    images: list[Path],
) -> None:
    """Write NAME.json (with the machine) and NAME.md, print the table; with `report`, rewrite the
    benchmark's section of docs/benchmarks.md with the command, the machine, the table and the plots."""
    machine = machine_description()
    write_json(data_dir / f"{name}.json", {"machine": machine, **data})
    (data_dir / f"{name}.md").write_text(text)
    if report:
        links = "\n".join(f"![{image.stem}](benchmarks/{image.name})" for image in images)
        command = command_line(f"benchmarks.{name}", argv)
        update_report_section(name, section_text(command=command, machine=machine, body=f"{text}\n{links}\n"))
    print(text)


def add_threads_argument(parser: Any) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default because the benchmark machine's 2 cores are shared",
    )


def _skeleton() -> str:
    parts = [REPORT_INTRO]
    for name, title in SECTIONS.items():
        body = ROLLOUT_EFFICIENCY_PLACEHOLDER if name == "rollout_efficiency" else "_Not measured yet._\n"
        parts.append(f"## {title}\n\n<!-- begin:{name} -->\n{body.strip()}\n<!-- end:{name} -->\n")
    return "\n".join(parts)


def fmt(value: float | None, pattern: str = "{:.3f}", missing: str = "not reached") -> str:
    return missing if value is None else pattern.format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class BenchTask:
    """A builtin task a benchmark can run on: its model, its prompt set, its response length limit, and the
    learner's micro-batch token budget (`algorithm.micro_batch_tokens`, chosen by measurement: with the
    reasoning task's spread of response lengths, 1,024 tokens cut the learner's share of a grpo step from
    37% to 27% on 2 CPU cores; the addition task's answers all have the same length)."""

    model: str
    dataset: str
    max_new_tokens: int
    title: str
    micro_batch_tokens: int | None = None


TASKS = {
    "addition": BenchTask(TINY_MODEL_ID, TOY_DATASET_ID, 16, "2-digit addition, tiny Llama"),
    "reasoning": BenchTask(
        TINY_REASONER_MODEL_ID,
        REASONING_DATASET_ID,
        96,
        "3-digit addition worked column by column, tiny reasoner",
        micro_batch_tokens=1024,
    ),
}


def add_task_argument(parser: Any) -> None:
    parser.add_argument(
        "--task",
        choices=list(TASKS),
        default="addition",
        help="addition: 12-token answers (the quick toy); reasoning: 30-80 tokens of working per answer",
    )


def apply_task_defaults(args: Any) -> None:
    """Fill a `--max-new-tokens` left unset with the task's limit."""
    if args.max_new_tokens is None:
        args.max_new_tokens = task_of(args).max_new_tokens


def task_of(args: Any) -> BenchTask:
    return TASKS[args.task]


def report_name(name: str, args: Any) -> str:
    """The benchmark's section (and file) name: the task's own, so each task keeps its results."""
    return name if args.task == "addition" else f"{name}_{args.task}"


def build_task_model(args: Any) -> Path:
    """The pretrained model directory of the benchmark's task (built on first use, then cached)."""
    from remix_engine.modeling import resolve_model_source

    return Path(resolve_model_source(task_of(args).model))


# -------------------------------------------------------------------------------------- toy training


def toy_train_config(
    algorithm: str,
    *,
    seed: int,
    steps: int,
    prompts: int,
    group_size: int,
    lr: float,
    max_new_tokens: int,
    eval_size: int,
    eval_every: int,
    model: str = TINY_MODEL_ID,
    train_path: str = TOY_DATASET_ID,
    **algorithm_overrides: Any,
) -> TrainConfig:
    """A job on a builtin task (the addition task by default); one optimizer step per pass over each batch.

    KL terms with zero weight are not computed (`log_inactive_kl` off), as a speed-minded user runs it.
    """
    algorithm_cfg = {
        "name": algorithm,
        "minibatch_size": prompts * group_size,
        "log_inactive_kl": False,
        **algorithm_overrides,
    }
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model},
            "data": {"train_path": train_path, "eval_size": eval_size},
            "rollout": {
                "prompts_per_step": prompts,
                "group_size": group_size,
                "max_new_tokens": max_new_tokens,
            },
            "algorithm": algorithm_cfg,
            "optim": {"lr": lr, "critic_lr": lr},
            "total_steps": steps,
            "eval_every": eval_every,
            "checkpoint_every": steps,
            "keep_checkpoints": 1,
            "log_completions": 0,
            "seed": seed,
        }
    )


def step_timing_config(
    algorithm: str,
    *,
    model: str,
    steps: int,
    prompts: int,
    group_size: int,
    max_new_tokens: int,
    **overrides: Any,
) -> TrainConfig:
    """A job whose steps are only timed (engine_throughput, learner_speed): seed 0, lr 1e-5, no held-out
    evaluation, and replaying algorithms kept in the Mix phase (no reincarnation) for every measured step."""
    return toy_train_config(
        algorithm,
        seed=0,
        steps=steps,
        prompts=prompts,
        group_size=group_size,
        lr=1e-5,
        max_new_tokens=max_new_tokens,
        eval_size=1,
        eval_every=0,
        model=model,
        **{"reincarnation_step": None, **overrides},
    )


def remix_settings(args: Any) -> dict[str, Any]:
    """The ReMix knobs of a benchmark's command line as algorithm settings (lambda decays from T on)."""
    return {
        "off_policy_fraction": args.p,
        "history_window": args.history,
        "utd_ratio": args.utd,
        "reincarnation_step": args.reincarnation_step,
        "lambda_start_step": args.reincarnation_step,
    }


def toy_config_from_args(
    algorithm: str, args: Any, *, seed: int, steps: int, model: str | None = None, **algorithm_overrides: Any
) -> TrainConfig:
    """`toy_train_config` with the task, batch, lr, length and evaluation options of a benchmark's command
    line; `model` replaces the task's model (a folder of it, say)."""
    task = task_of(args)
    return toy_train_config(
        algorithm,
        seed=seed,
        steps=steps,
        prompts=args.prompts,
        group_size=args.group_size,
        lr=args.lr,
        max_new_tokens=args.max_new_tokens,
        eval_size=args.eval_size,
        eval_every=args.eval_every,
        model=model or task.model,
        train_path=task.dataset,
        **{"micro_batch_tokens": task.micro_batch_tokens, **algorithm_overrides},
    )


class TrainingRecorder(NullCallbacks):
    """Trainer callbacks that keep every step's metrics and an accuracy curve.

    `train_s` is the cumulative time spent in training steps (the trainer's `step_s`), so held-out
    evaluation and checkpoint writing are excluded; `wall_s` is everything since construction.
    With `rollout_budget`, training stops once that many fresh responses have been generated.
    """

    def __init__(self, rollout_budget: int | None = None) -> None:
        self.rollout_budget = rollout_budget
        self.started = time.perf_counter()
        self.train_s = 0.0
        self.fresh_rollouts = 0
        self.steps: list[dict[str, Any]] = []
        self.points: list[dict[str, float]] = []

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        self.steps.append(dict(metrics))
        self.train_s += float(metrics["step_s"])
        self.fresh_rollouts = int(metrics["fresh_rollouts_total"])
        if "eval_accuracy" in metrics:
            self.add_point(step, float(metrics["eval_accuracy"]))

    def add_point(self, step: int, accuracy: float) -> None:
        self.points.append(
            {
                "step": step,
                "fresh_rollouts": float(self.fresh_rollouts),
                "train_s": self.train_s,
                "wall_s": time.perf_counter() - self.started,
                "accuracy": accuracy,
            }
        )

    def on_event(self, kind: str, step: int, _message: str, payload: dict[str, Any]) -> None:
        if kind == "evaluation" and step == 0:
            self.add_point(0, float(payload["accuracy"]))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return self.rollout_budget is not None and self.fresh_rollouts >= self.rollout_budget


def first_reaching(points: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((p for p in points if p["accuracy"] >= target), None)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
