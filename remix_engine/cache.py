"""The on-disk cache of locally built models (the builtin tiny model, the stand-ins): where it lives and how
an entry is built exactly once.

`default_cache_dir()` is `$REMIX_CACHE_DIR`, else `~/.cache/remix`. `build_once(target, write, marker)` makes a
cache entry appear atomically: the builder writes into a temporary sibling directory under an exclusive file
lock and the directory is renamed into place, so concurrent builders (processes, workers, test sessions)
never see a partial directory, and a second call returns at once. `read_build_meta` reads the JSON file a
builder writes last, its completion marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    return Path(os.environ.get("REMIX_CACHE_DIR") or Path.home() / ".cache" / "remix")


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if missing) for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, write: Callable[[Path], object], marker: str) -> Path:
    """Make `target` exist exactly once: `write(tmp_dir)` runs under a lock and tmp_dir is renamed to target.

    `marker` is a file `write` creates last; a target holding it is complete and returned at once.
    """
    if (target / marker).is_file():
        return target
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if (target / marker).is_file():  # another process finished while we waited
            return target
        if target.exists():  # an unfinished leftover (no marker): rebuild it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            write(tmp)
            if not (tmp / marker).is_file():
                raise RuntimeError(f"builder for {target} did not write its marker file {marker}")
            make_world_readable(tmp)  # mkdtemp creates 0700; the cache may be shared between users
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def make_world_readable(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def read_build_meta(model_dir: Path | str, marker: str) -> dict[str, Any]:
    """The JSON object a builder wrote last into a built directory (its completion marker)."""
    meta: dict[str, Any] = json.loads((Path(model_dir) / marker).read_text())
    return meta
