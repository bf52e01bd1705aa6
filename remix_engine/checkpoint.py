"""Checkpoints: a Hugging Face model folder plus the trainer state needed to resume exactly.

Layout of `<root>/step-000010/`:
  config.json, model.safetensors, tokenizer files    -> loads with AutoModelForCausalLM / AutoTokenizer
  trainer_state/state.pt                             -> optimizer(s), critic, anchor and precedent
                                                        weights, replay buffer, sampler, RNG, counters
  trainer_state/meta.json                            -> schema version, step, config; written last
A checkpoint is written into a temporary sibling folder and renamed into place, so a crash or a
full disk never leaves a half-written checkpoint behind and never touches the previous one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, cast

import torch

from remix_engine.checkpoint_dirs import checkpoint_dir_name, step_of_checkpoint_dir

SCHEMA_VERSION = 1
STATE_DIR = "trainer_state"
_DISK_FULL_MARKERS = ("No space left", "StorageFull", "ENOSPC", "Disk quota exceeded")
_NEARLY_FULL_BYTES = 1024 * 1024


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, I/O error); earlier ones are intact."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)  # one argument: str() is the message itself
        self.errno = errno


def _free_bytes(root: Path) -> int | None:
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def _write_failure(error: BaseException, root: Path, step: int, free_at_failure: int | None) -> CheckpointWriteError:
    # Writers report a full disk differently (OSError errno 28, safetensors' "StorageFull", torch's
    # "unexpected pos"), so a failure while the filesystem is (nearly) full is called what it is.
    first_line = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, OSError) and error.errno is not None:
        cause = os.strerror(error.errno)
    elif (free_at_failure is not None and free_at_failure < _NEARLY_FULL_BYTES) or any(
        marker in str(error) for marker in _DISK_FULL_MARKERS
    ):
        cause = os.strerror(28)  # "No space left on device"
    else:
        cause = f"{type(error).__name__}: {first_line}".rstrip(": ")
    free = "free space unknown" if free_at_failure is None else f"{free_at_failure} bytes free at the failure"
    previous = latest_checkpoint(root)
    kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
    return CheckpointWriteError(
        f"could not write checkpoint {checkpoint_dir_name(step)} under {root}: {cause} ({free}); {kept}",
        errno=error.errno if isinstance(error, OSError) else None,
    )


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write atomically and return the final folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(step)
    tmp = root / f".tmp-{checkpoint_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / STATE_DIR).mkdir()
        torch.save(trainer_state, tmp / STATE_DIR / "state.pt")
        meta = {"schema_version": SCHEMA_VERSION, "step": step, **meta}
        (tmp / STATE_DIR / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        _fsync_tree(tmp)
        if final.exists():  # a retried step rewrites its checkpoint
            stale = root / f".old-{checkpoint_dir_name(step)}-{os.getpid()}"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException as error:
        free_at_failure = _free_bytes(root)  # measured before the partial folder is removed
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, CheckpointWriteError):
            raise _write_failure(error, root, step, free_at_failure) from error
        raise
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def is_complete(path: Path) -> bool:
    return (path / STATE_DIR / "meta.json").is_file()


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of_checkpoint_dir(p.name) is not None and is_complete(p)]
    # Every path in `found` passed the is-not-None filter above.
    return sorted(found, key=lambda p: cast(int, step_of_checkpoint_dir(p.name)))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((path / STATE_DIR / "meta.json").read_text())
    return meta


def load_trainer_state(path: Path) -> dict[str, Any]:
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_DIR}/meta.json)")
    meta = read_meta(path)
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"checkpoint {path} has schema {meta['schema_version']}, newer than {SCHEMA_VERSION}")
    state: dict[str, Any] = torch.load(path / STATE_DIR / "state.pt", map_location="cpu", weights_only=False)
    return state


def prune_checkpoints(root: Path, keep: int, protect: set[Path] | None = None, keep_best: int = 0) -> list[Path]:
    """Delete all but the `keep` newest checkpoints, the `keep_best` with the highest eval_score
    in their meta, and any in `protect`; return what was deleted."""
    found = list_checkpoints(root)
    kept = set(protect or set()) | set(found[-keep:] if keep > 0 else [])
    scored = [(read_meta(p).get("eval_score"), p) for p in found]
    best = sorted(((s, p) for s, p in scored if s is not None), key=lambda sp: (-sp[0], -found.index(sp[1])))
    kept |= {p for _, p in best[:keep_best]}
    doomed = [p for p in found if p not in kept]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
