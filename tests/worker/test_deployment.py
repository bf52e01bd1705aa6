"""docker-compose.yml, the Dockerfiles and .ci/run are consistent with the code they deploy.

Docker itself is not available in CI, so the compose file is parsed and checked structurally.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_compose_declares_the_whole_stack(compose):
    assert set(compose["services"]) >= {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker-gpu",
        "worker-maintenance",
    }
    assert {"artifacts", "pgdata"} <= set(compose["volumes"])


@pytest.mark.parametrize(("name", "probe"), [("postgres", "pg_isready"), ("redis", "redis-cli")])
def test_backing_services_have_healthchecks(compose, name, probe):
    check = compose["services"][name]["healthcheck"]
    assert probe in " ".join(check["test"])
    assert check["retries"] >= 3


def test_startup_order_waits_for_health_and_migrations(compose):
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert _command(services["migrate"]) == ["alembic", "upgrade", "head"]
    for name in ("api", "worker-gpu", "worker-maintenance"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_gpu_worker_reserves_a_gpu_and_consumes_the_training_queue(compose):
    worker = compose["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["build"]["dockerfile"] == "Dockerfile.worker"
    command = _command(worker)
    assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert command[command.index("-Q") + 1] == worker["environment"]["REMIX_TASK_QUEUE"] == "gpu"


def test_maintenance_worker_runs_beat_for_the_reaper(compose):
    command = _command(compose["services"]["worker-maintenance"])
    assert "-B" in command
    assert command[command.index("-Q") + 1] == "maintenance"


def test_every_app_service_gets_valid_settings(compose):
    for name in ("migrate", "api", "worker-gpu", "worker-maintenance"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        settings = Settings(**{k.removeprefix("REMIX_").lower(): v for k, v in env.items() if k.startswith("REMIX_")})
        assert settings.env == "prod"
        assert settings.database_url.startswith("postgresql+psycopg://") and "@postgres:" in settings.database_url
        assert settings.broker_url == "redis://redis:6379/0"


def test_only_the_gpu_worker_gets_the_hub_token(compose):
    # gated hub models are downloaded by the training worker; nothing else needs the token
    services = compose["services"]
    assert services["worker-gpu"]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"
    assert [name for name, service in services.items() if "HF_TOKEN" in (service.get("environment") or {})] == [
        "worker-gpu"
    ]


def test_api_and_gpu_worker_share_the_artifact_volume(compose):
    mounts = {name: compose["services"][name]["volumes"] for name in ("api", "worker-gpu")}
    assert mounts["api"] == mounts["worker-gpu"] == ["artifacts:/data"]
    assert compose["x-remix-env"]["REMIX_ARTIFACTS_DIR"].startswith("/data/")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.worker"])
def test_dockerfiles_copy_every_package_and_pin_torch(dockerfile):
    text = (REPO_ROOT / dockerfile).read_text()
    for needed in ("remix_engine", "service", "worker", "migrations", "alembic.ini", "torch==2.13.0"):
        assert needed in text, f"{dockerfile} lacks {needed}"
    assert "USER remix" in text


def test_worker_image_offers_the_vllm_extra():
    text = (REPO_ROOT / "Dockerfile.worker").read_text()
    assert "ARG INSTALL_VLLM" in text and '".[vllm]"' in text


def test_ci_runs_the_test_command_of_the_readme():
    ci = REPO_ROOT / ".ci" / "run"
    test_script = REPO_ROOT / "scripts" / "test.sh"
    for script in (ci, test_script):
        assert os.access(script, os.X_OK)
        subprocess.run(["bash", "-n", str(script)], check=True)
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in ci.read_text()
    text = test_script.read_text()
    assert 'python -m pytest -q "$@"' in text
    assert "pip install --quiet -e '.[dev]'" in text
    # the deployment guide documents the same command
    assert "bash scripts/test.sh" in (REPO_ROOT / "docs" / "deployment.md").read_text()


def test_readme_demo_command_installs_and_runs_the_demo():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    demo = REPO_ROOT / "scripts" / "demo.sh"
    assert os.access(demo, os.X_OK)
    subprocess.run(["bash", "-n", str(demo)], check=True)
    text = demo.read_text()
    assert "torch==2.13.0" in text and "remix-demo" in text


def test_our_images_are_built_locally_never_pulled(compose):
    ours = {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("remix-")}
    assert set(ours) == {"migrate", "api", "worker-gpu", "worker-maintenance"}
    for name, service in ours.items():
        assert (REPO_ROOT / service["build"]["dockerfile"]).is_file(), name


def test_gpu_checks_refuse_clearly_without_a_gpu():
    script = REPO_ROOT / "scripts" / "gpu_checks.sh"
    assert os.access(script, os.X_OK)
    run = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "gpu_checks: no CUDA device visible" in run.stderr


def test_the_gpu_worker_can_build_the_reward_jail_without_privileges(compose):
    worker = compose["services"]["worker-gpu"]
    assert not worker.get("privileged", False)
    assert worker["cap_drop"] == ["ALL"] and not worker.get("cap_add")
    assert "no-new-privileges=true" in worker["security_opt"]
    dockerfile = (REPO_ROOT / "Dockerfile.worker").read_text()
    assert "bubblewrap" in dockerfile and "libseccomp2" in dockerfile
    assert "USER remix" in dockerfile  # bwrap then runs unprivileged, in a user namespace of its own


def test_the_test_command_installs_the_sandbox_tool():
    script = (REPO_ROOT / "scripts" / "test.sh").read_text()
    assert "apt-get install -y -qq bubblewrap libseccomp2" in script
    assert script.index("ensure_sandbox_tool\n") < script.index("ensure_venv\n", script.index("ensure_sandbox_tool\n"))
