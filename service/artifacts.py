"""Artifact store: where uploaded datasets and checkpoint folders live.

Keys are '/'-separated relative paths such as `datasets/<dataset_id>/<filename>` and
`jobs/<job_id>/checkpoints/step-000010/` (a trailing slash names a folder prefix). The local
store maps keys under a root directory and refuses keys that would escape it; the S3 store
(used when boto3 is installed and a bucket is configured) maps them to object keys.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, runtime_checkable

from remix_engine.checkpoint_dirs import checkpoint_dir_name
from service.settings import Settings, get_settings

_CHUNK = 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def checkpoint_key(job_id: object, step: int) -> str:
    """Folder key of the Hugging Face checkpoint of `job_id` at `step`."""
    return f"jobs/{job_id}/checkpoints/{checkpoint_dir_name(step)}/"


def dataset_key(dataset_id: object, filename: str) -> str:
    """File key of an uploaded dataset; the filename is reduced to safe characters.

    The extension is reduced on its own and always kept: the worker's loader picks the format from
    it, so a name whose stem is all non-ASCII (`данные 🤖.jsonl`) becomes `data.jsonl`, not `jsonl`."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem, dot, extension = name.rpartition(".")
    safe_extension = _SAFE_NAME.sub("_", extension).strip("._") if dot and stem.strip(".") else ""
    if not safe_extension:
        return f"datasets/{dataset_id}/{_SAFE_NAME.sub('_', name).strip('._') or 'data'}"
    # Only leading dots and underscores go (no hidden files); the stem's end touches the extension.
    safe_stem = _SAFE_NAME.sub("_", stem).lstrip("._") or "data"
    return f"datasets/{dataset_id}/{safe_stem}.{safe_extension}"


def validate_key(key: str) -> str:
    """Reject absolute keys and any '..' or empty component (path traversal)."""
    parts = key.rstrip("/").split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ValueError(f"invalid artifact key: {key!r}")
    return key


@dataclass(frozen=True)
class ArtifactFile:
    """One file under a folder prefix: its full key, path relative to the prefix, and size."""

    key: str
    relpath: str
    size: int


@runtime_checkable
class ArtifactStore(Protocol):
    """What the API and the workers need from a blob store."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, src: Path) -> None: ...

    def put_dir(self, prefix: str, src_dir: Path) -> int:
        """Upload a folder tree under `prefix`; returns the total bytes stored."""
        ...

    def open(self, key: str) -> IO[bytes]: ...

    def exists(self, key: str) -> bool:
        """True for a stored file, or for a folder prefix holding at least one file."""
        ...

    def iter_files(self, prefix: str) -> Iterator[ArtifactFile]:
        """Files under a folder prefix, recursively, sorted by relative path."""
        ...

    def local_path(self, key: str, cache_dir: Path | None = None) -> Path:
        """A local filesystem path holding the file or folder (downloaded if the store is remote)."""
        ...

    def delete(self, key: str) -> None:
        """Delete a file or a whole folder prefix; missing keys are ignored."""
        ...


class LocalArtifactStore:
    """Artifacts as plain files under `root`; writes go through a temp file and rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        path = (self.root / validate_key(key).rstrip("/")).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"invalid artifact key: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self.path_for(key), lambda fh: fh.write(data))

    def put_file(self, key: str, src: Path) -> None:
        def copy(fh: IO[bytes]) -> None:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, fh, _CHUNK)

        self._atomic_write(self.path_for(key), copy)

    def put_dir(self, prefix: str, src_dir: Path) -> int:
        total = 0
        for src in sorted(Path(src_dir).rglob("*")):
            if src.is_file():
                rel = src.relative_to(src_dir).as_posix()
                self.put_file(prefix.rstrip("/") + "/" + rel, src)
                total += src.stat().st_size
        return total

    def open(self, key: str) -> IO[bytes]:
        return open(self.path_for(key), "rb")

    def exists(self, key: str) -> bool:
        path = self.path_for(key)
        if path.is_file():
            return True
        return path.is_dir() and any(p.is_file() for p in path.rglob("*"))

    def iter_files(self, prefix: str) -> Iterator[ArtifactFile]:
        base = self.path_for(prefix)
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            # Symlinks could point outside the store; they are never served.
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(base).as_posix()
                yield ArtifactFile(prefix.rstrip("/") + "/" + rel, rel, path.stat().st_size)

    def local_path(self, key: str, cache_dir: Path | None = None) -> Path:  # noqa: ARG002
        return self.path_for(key)

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()

    @staticmethod
    def _atomic_write(dest: Path, write: Any) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class S3ArtifactStore:
    """Artifacts in an S3 (or S3-compatible) bucket; needs the optional boto3 package."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3  # optional dependency, imported only when S3 is configured

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3", endpoint_url=endpoint_url)

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data)

    def put_file(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self._object_key(key))

    def put_dir(self, prefix: str, src_dir: Path) -> int:
        total = 0
        for src in sorted(Path(src_dir).rglob("*")):
            if src.is_file():
                self.put_file(prefix.rstrip("/") + "/" + src.relative_to(src_dir).as_posix(), src)
                total += src.stat().st_size
        return total

    def open(self, key: str) -> IO[bytes]:
        body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"]
        return body

    def exists(self, key: str) -> bool:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._object_key(key), MaxKeys=1)
        return bool(listing.get("KeyCount"))

    def iter_files(self, prefix: str) -> Iterator[ArtifactFile]:
        folder = self._object_key(prefix.rstrip("/") + "/")
        items: list[ArtifactFile] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(folder) :]
                items.append(ArtifactFile(prefix.rstrip("/") + "/" + rel, rel, int(obj["Size"])))
        yield from sorted(items, key=lambda f: f.relpath)

    def local_path(self, key: str, cache_dir: Path | None = None) -> Path:
        target_root = Path(cache_dir or tempfile.mkdtemp(prefix="remix-artifacts-"))
        files = list(self.iter_files(key)) if key.endswith("/") else []
        if not files:
            dest = target_root / validate_key(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, self._object_key(key), str(dest))
            return dest
        for item in files:
            dest = target_root / validate_key(item.key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, self._object_key(item.key), str(dest))
        return target_root / key.rstrip("/")

    def delete(self, key: str) -> None:
        keys = [f.key for f in self.iter_files(key)] if key.endswith("/") else [key]
        for item in keys:
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(item))


def get_artifact_store(settings: Settings | None = None) -> ArtifactStore:
    """The store configured by `settings`: S3 if a bucket is set, else the local directory."""
    settings = settings or get_settings()
    if settings.artifacts_s3_bucket:
        return S3ArtifactStore(
            settings.artifacts_s3_bucket, settings.artifacts_s3_prefix, settings.artifacts_s3_endpoint
        )
    return LocalArtifactStore(settings.artifacts_dir)
