"""Configuration of the Celery application and the registered tasks."""

from __future__ import annotations

import subprocess
import sys

from service.settings import Settings
from worker.celery_app import MAINTENANCE_QUEUE, REAP_TASK, SWEEP_WEBHOOKS_TASK, create_celery_app, reap_interval

TASK_NAMES = sorted(
    [
        "worker.deliver_webhook",
        "worker.join_job_node",
        "worker.reap_stale_jobs",
        "worker.sweep_webhooks",
        "worker.train_job",
    ]
)


def test_app_is_configured_for_long_single_gpu_jobs():
    settings = Settings(broker_url="redis://127.0.0.1:6379/13", task_queue="gpu-a100", stale_after_seconds=120)
    app = create_celery_app(settings)
    conf = app.conf

    assert app.main == "remix"
    assert conf.broker_url == "redis://127.0.0.1:6379/13"
    assert (conf.task_serializer, list(conf.accept_content)) == ("json", ["json"])
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_disable_prefetch is True
    assert conf.task_acks_late is False
    assert conf.task_ignore_result is True
    assert conf.worker_max_tasks_per_child == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.task_routes == {
        "worker.train_job": {"queue": "gpu-a100"},
        "worker.join_job_node": {"queue": "gpu-a100"},  # a further node of a multi-node job is a training slot too
        REAP_TASK: {"queue": MAINTENANCE_QUEUE},
        # Webhooks go to the maintenance worker: a GPU worker may be busy training for hours.
        "worker.deliver_webhook": {"queue": MAINTENANCE_QUEUE},
        SWEEP_WEBHOOKS_TASK: {"queue": MAINTENANCE_QUEUE},
    }
    schedule = conf.beat_schedule["reap-stale-jobs"]
    assert schedule["task"] == REAP_TASK
    assert schedule["schedule"] == 30.0
    assert schedule["options"]["queue"] == MAINTENANCE_QUEUE
    sweep = conf.beat_schedule["sweep-webhooks"]
    assert (sweep["task"], sweep["schedule"], sweep["options"]["queue"]) == (
        SWEEP_WEBHOOKS_TASK,
        30.0,
        MAINTENANCE_QUEUE,
    )


def test_reaper_runs_often_enough_for_short_stale_limits():
    assert reap_interval(Settings(stale_after_seconds=600)) == 30.0
    assert reap_interval(Settings(stale_after_seconds=4)) == 1.0


def test_embedded_sqlite_broker_gets_its_folder(tmp_path):
    broker = tmp_path / "var" / "broker.db"
    app = create_celery_app(Settings(broker_url=f"sqla+sqlite:///{broker}"))

    assert broker.parent.is_dir()
    assert app.conf.worker_disable_prefetch is False  # a Redis-only option


def test_tasks_are_registered_without_importing_torch():
    # The maintenance worker and beat must stay light: torch is imported inside the training task only.
    code = (
        "import sys, worker.tasks as t;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'remix_engine.trainer' not in sys.modules;"
        "print(sorted(n for n in t.app.tasks if n.startswith('worker.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    registered = str(TASK_NAMES)
    assert result.stdout.strip() == registered


def test_the_app_names_its_tasks_module_without_importing_it():
    # One-way dependency: worker.tasks imports the app; the app finds the tasks through `include`.
    code = (
        "import sys, worker.celery_app as c;"
        "print('worker.tasks' in sys.modules, list(c.app.conf.include));"
        "c.app.loader.import_default_modules();"
        "print('worker.tasks' in sys.modules, sorted(n for n in c.app.tasks if n.startswith('worker.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines() == [
        "False ['worker.tasks']",
        f"True {TASK_NAMES}",
    ]
