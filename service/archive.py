"""Stream a folder of the artifact store as a tar.gz, chunk by chunk.

Tar headers are written by `tarfile`, file bodies are copied in 1 MiB chunks through one
streaming gzip compressor, so memory stays bounded whatever the checkpoint size.
"""

from __future__ import annotations

import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator

from service.artifacts import ArtifactFile, ArtifactStore

_CHUNK = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE


def _entry_chunks(store: ArtifactStore, item: ArtifactFile, arcname: str, mtime: float) -> Iterator[bytes]:
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = item.size, int(mtime), 0o644
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    remaining = item.size
    with store.open(item.key) as fh:
        while remaining > 0:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{item.key} shrank while being archived")
            remaining -= len(chunk)
            yield chunk
    if item.size % _BLOCK:
        yield b"\0" * (_BLOCK - item.size % _BLOCK)


def tar_gz_stream(store: ArtifactStore, files: Iterable[ArtifactFile], root: str) -> Iterator[bytes]:
    """gzip-compressed tar of `files`, each stored as `<root>/<relpath>`."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
    mtime = time.time()
    for item in files:
        for raw in _entry_chunks(store, item, f"{root}/{item.relpath}", mtime):
            out = compressor.compress(raw)
            if out:
                yield out
    yield compressor.compress(b"\0" * (2 * _BLOCK))  # end-of-archive marker
    yield compressor.flush()
