"""`python -m worker.demo` end to end with the embedded defaults only: SQLite database, SQLite
Celery broker and local artifacts in ./var of a scratch directory, real API and worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from remix_engine.config import TrainConfig
from service.job_config import BUILTIN_MODELS, build_train_config
from service.schemas import JobCreate
from worker.demo import demo_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_a_valid_train_config():
    config = TrainConfig.model_validate(demo_config(40))
    assert config.algorithm.name == "remix-grpo"
    assert config.algorithm.reincarnation_step == 12
    assert config.total_steps == 40 and config.checkpoint_every == 10
    # the builtin chat model, its prompts laid out by its own chat template
    assert config.model.name_or_path == "builtin:tiny-chat"
    assert (config.data.train_path, config.data.chat_template) == ("builtin:addition", "auto")


def test_the_demo_job_is_the_tiny_chat_example():
    example = yaml.safe_load((REPO_ROOT / "examples" / "tiny-chat-remix-grpo.yaml").read_text())
    assert TrainConfig.model_validate(example) == TrainConfig.model_validate(demo_config(40))


def test_the_api_accepts_the_demo_job_from_a_tenant_key():
    """The builtin chat model is a known builtin id, and its pre-flight (run without torch) fits."""
    job = build_train_config(JobCreate(config=demo_config(40)), train=None, evaluation=None, is_admin=False)
    assert job.model.name_or_path in BUILTIN_MODELS


def _accuracies(output: str, row: str) -> tuple[float, float]:
    """The before/after numbers of one row of the demo's accuracy table."""
    match = re.search(re.escape(row) + r"[^0-9]*([0-9]+\.[0-9]+)[^0-9]+([0-9]+\.[0-9]+)", output)
    assert match, output[-3000:]
    return float(match.group(1)), float(match.group(2))


@pytest.mark.slow
def test_demo_trains_downloads_and_evaluates_with_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    if "REMIX_CACHE_DIR" in os.environ:  # reuse the built tiny chat model
        env["REMIX_CACHE_DIR"] = os.environ["REMIX_CACHE_DIR"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"  # keep rich from wrapping the lines checked below

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.demo",
            "--steps",
            "2",
            "--prompts-per-step",
            "8",
            "--eval-size",
            "16",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    var = tmp_path / "var"
    assert (var / "remix.db").is_file() and (var / "broker.db").is_file()
    checkpoints = list((var / "demo").glob("*/step-000002/config.json"))
    assert len(checkpoints) == 1, output[-3000:]
    assert not list((var / "demo").glob("*/step-000002/trainer_state"))  # the archive holds the model only
    assert "stopping the API and the worker" in output
    # held-out accuracy before and after, measured by the worker (chat-templated prompts, math_verify) and
    # here on the downloaded checkpoint (prompts from its own apply_chat_template): the pretrained chat
    # model's partial accuracy before (a plain-text prompt would score about 0), two steps barely move it,
    # and both measurements agree on the same 16 problems
    worker_before, worker_after = _accuracies(output, "worker (job summary)")
    local_before, local_after = _accuracies(output, "this process (downloaded checkpoint)")
    assert 0.1 <= local_before <= 0.8, output[-3000:]
    assert abs(worker_before - local_before) <= 2 / 16 + 1e-9
    assert abs(worker_after - local_after) <= 2 / 16 + 1e-9
    assert abs(local_after - local_before) <= 0.25
