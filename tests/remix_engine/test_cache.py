"""Tests of the locked, atomic cache that the locally built models (tiny model, stand-ins) share."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remix_engine.cache import build_once, default_cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_default_cache_dir_follows_remix_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REMIX_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("REMIX_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "remix"


_CONCURRENT_BUILDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from remix_engine.cache import build_once

    target, log = Path(sys.argv[1]), Path(sys.argv[2])

    def write(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # long enough for the other process to reach the lock
        (tmp / "weights.bin").write_bytes(b"x" * 1000)
        (tmp / "marker.json").write_text("{}")

    print(build_once(target, write, marker="marker.json"))
    """
)


def test_build_once_runs_the_builder_once_across_concurrent_processes(tmp_path: Path) -> None:
    target, log = tmp_path / "cache" / "thing", tmp_path / "builds.log"
    target.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_BUILDER, str(target), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(target)] * 2
    assert len(log.read_text().split()) == 1  # the second process waited and reused the result
    assert (target / "weights.bin").read_bytes() == b"x" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == [".thing.lock", "thing"]  # no temp dirs left


def test_build_once_leaves_nothing_behind_when_the_builder_fails(tmp_path: Path) -> None:
    target = tmp_path / "thing"

    def failing(tmp: Path) -> None:
        (tmp / "half-written").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(target, failing, marker="done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.lock"]

    def succeeding(tmp: Path) -> None:
        (tmp / "done").write_text("ok")

    assert build_once(target, succeeding, marker="done") == target
    assert (target / "done").read_text() == "ok"


def test_build_once_rejects_a_builder_that_forgets_its_marker(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="marker"):
        build_once(tmp_path / "thing", lambda tmp: (tmp / "weights").write_text("w"), marker="done")
    assert not (tmp_path / "thing").exists()
