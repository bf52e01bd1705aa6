"""Local artifact store: key safety, folder uploads, listing, deletion; streamed tar.gz archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from service.archive import tar_gz_stream
from service.artifacts import LocalArtifactStore, checkpoint_key, dataset_key, get_artifact_store
from service.settings import Settings


def test_keys() -> None:
    assert checkpoint_key("j1", 10) == "jobs/j1/checkpoints/step-000010/"
    assert dataset_key("d1", "../../etc/passwd") == "datasets/d1/passwd"
    assert dataset_key("d1", "my data (v2).jsonl") == "datasets/d1/my_data_v2_.jsonl"
    assert dataset_key("d1", "..") == "datasets/d1/data"


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        ("данные 🤖.jsonl", "datasets/d1/data.jsonl"),
        ("🤖.parquet", "datasets/d1/data.parquet"),
        ("数据集 v2.json", "datasets/d1/v2.json"),
        ("..\\..\\données.ndjson", "datasets/d1/donn_es.ndjson"),
        (".hidden.json", "datasets/d1/hidden.json"),
    ],
)
def test_dataset_keys_keep_the_extension_of_non_ascii_names(filename: str, key: str) -> None:
    # The worker's loader picks the format from the extension: losing it fails the job.
    assert dataset_key("d1", filename) == key


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "jobs/../../x", "jobs//x", "a/./b", "a\\..\\b", ""])
def test_traversal_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put_bytes(key, b"x")


def test_symlinks_are_not_served(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes("jobs/j/checkpoints/step-000001/config.json", b"{}")
    (tmp_path / "secret").write_text("s3cret")
    (store.root / "jobs/j/checkpoints/step-000001/leak").symlink_to(tmp_path / "secret")
    assert [f.relpath for f in store.iter_files("jobs/j/checkpoints/step-000001/")] == ["config.json"]


def test_put_dir_iter_delete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"aaa")
    (src / "sub" / "b.bin").write_bytes(b"b" * 10)
    store = LocalArtifactStore(tmp_path / "root")
    assert store.put_dir("jobs/j/x/", src) == 13
    files = list(store.iter_files("jobs/j/x/"))
    assert [(f.relpath, f.size, f.key) for f in files] == [
        ("a.txt", 3, "jobs/j/x/a.txt"),
        ("sub/b.bin", 10, "jobs/j/x/sub/b.bin"),
    ]
    assert store.exists("jobs/j/x/") and store.exists("jobs/j/x/a.txt") and not store.exists("jobs/j/y/")
    with store.open("jobs/j/x/sub/b.bin") as fh:
        assert fh.read() == b"b" * 10
    assert store.local_path("jobs/j/x/a.txt").read_bytes() == b"aaa"
    store.delete("jobs/j/x/")
    assert not store.exists("jobs/j/x/") and list(store.iter_files("jobs/j/x/")) == []


def test_store_from_settings(tmp_path: Path) -> None:
    store = get_artifact_store(Settings(artifacts_dir=str(tmp_path / "arts")))
    assert isinstance(store, LocalArtifactStore) and store.root == (tmp_path / "arts").resolve()


def test_tar_gz_stream_roundtrip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    contents = {
        "empty.txt": b"",
        "block.bin": b"z" * 512,
        "odd.bin": bytes(range(256)) * 4099,
        "dir/x.json": b"{}",
    }
    for rel, data in contents.items():
        store.put_bytes(f"c/{rel}", data)
    chunks = list(tar_gz_stream(store, store.iter_files("c/"), "root"))
    assert len(chunks) > 1  # produced incrementally, not as one blob
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as archive:
        got = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert got == {f"root/{rel}": data for rel, data in contents.items()}
