"""RemixClient dataset operations against the real API: upload (validated), read, list, and
submitting a job on an uploaded dataset."""

from __future__ import annotations

from pathlib import Path

from client_testing import write_jsonl
from testing_support import make_caller

from remix_client import RemixClient


def test_upload_get_and_list_datasets(base_url: str, database_url: str, tmp_path: Path) -> None:
    caller = make_caller(database_url)
    rows = [{"question": f"{i}+{i}=", "expected": str(2 * i)} for i in range(6)]
    path = write_jsonl(tmp_path / "sums.jsonl", rows)
    with RemixClient(base_url, caller.key) as client:
        dataset = client.upload_dataset(path, prompt_field="question", answer_field="expected", name="sums")
        assert (dataset.name, dataset.format, dataset.num_rows) == ("sums", "jsonl", 6)
        assert (dataset.prompt_field, dataset.answer_field) == ("question", "expected")
        assert dataset.size_bytes == path.stat().st_size
        assert dataset.preview[0] == {"prompt": "0+0=", "answer": "0"}  # as training reads it
        assert client.get_dataset(dataset.id) == dataset

        plain = [{"prompt": r["question"], "answer": r["expected"]} for r in rows[:2]]
        second = client.upload_dataset(write_jsonl(tmp_path / "more.jsonl", plain))
        assert second.name == "more.jsonl"  # the file name by default
        assert [d.id for d in client.list_datasets(page_size=1)] == [second.id, dataset.id]
        page = client.list_datasets_page(limit=1)
        assert page.has_more and page.next_cursor and page.data[0].id == second.id

        job = client.create_job({"total_steps": 2}, dataset_id=dataset.id)
        assert job.dataset_id == dataset.id
