"""Celery workers of the service: run training jobs and re-queue jobs whose worker died.

`worker.celery_app` holds the Celery application, `worker.tasks` the two tasks
(`worker.train_job`, `worker.reap_stale_jobs`), `worker.job_runner` the claim/train/finish logic,
`worker.distributed_launch` / `worker.distributed_entry` multi-process jobs and `worker.reaper` the
stale-job reaper, and `worker.demo` the end-to-end demo (`remix-demo`). Their database writes
(claim, guarded attempt writes, finish, re-queue) are the transitions of `service.lifecycle`.
"""
