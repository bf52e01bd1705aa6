"""The command line that starts a Celery worker process of the service.

Used by the demo and by anything else that launches workers as subprocesses, so that every worker
is started the same way: `python -m celery -A worker.celery_app worker -Q <queues> ...`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def celery_worker_argv(
    queues: Sequence[str],
    node_name: str,
    *,
    concurrency: int | None = 1,
    pool: str = "prefork",
    beat_schedule: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """argv of a worker consuming `queues`; `beat_schedule` also runs the periodic reaper (Celery beat)."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", ",".join(queues)]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    argv += ["--pool", pool, "-n", node_name, "--loglevel", "INFO"]
    if beat_schedule is not None:
        argv += ["-B", "-s", str(beat_schedule)]
    return [*argv, *extra]
