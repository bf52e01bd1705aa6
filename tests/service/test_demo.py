"""`python -m service.demo` end to end with the embedded defaults only: SQLite database, SQLite
Celery broker and local artifacts in ./var of a scratch directory, real API and worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from remix_engine.config import TrainConfig
from service.demo import demo_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_a_valid_train_config():
    config = TrainConfig.model_validate(demo_config(40))
    assert config.algorithm.name == "remix-grpo"
    assert config.algorithm.reincarnation_step == 12
    assert config.total_steps == 40 and config.checkpoint_every == 10


@pytest.mark.slow
def test_demo_trains_downloads_and_evaluates_with_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    if "REMIX_CACHE_DIR" in os.environ:  # reuse the built tiny model
        env["REMIX_CACHE_DIR"] = os.environ["REMIX_CACHE_DIR"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"  # keep rich from wrapping the lines checked below

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.demo",
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
    assert "worker (job summary)" in output and "downloaded checkpoint" in output
    assert "stopping the API and the worker" in output
