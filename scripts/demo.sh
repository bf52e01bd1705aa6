#!/usr/bin/env bash
# The demo on a fresh machine: create .venv, install the project (CPU torch), run `remix-demo`.
# The demo starts the API and a Celery worker on the embedded defaults (SQLite database and broker,
# local artifacts under ./var), submits a ReMix-GRPO job on the builtin chat model (builtin:tiny-chat,
# the builtin addition prompts laid out by its ChatML template) over HTTP, follows it live, downloads the
# final checkpoint and prints held-out accuracy before and after.
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --steps 20`.
set -euo pipefail
cd "$(dirname "$0")/.."

python="$(command -v python3.11 || command -v python3)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
exec remix-demo "$@"
