"""Real architectures through the whole service: a uvicorn API and one Celery worker process train the
Qwen2.5-Instruct stand-in (Qwen2ForCausalLM, ChatML) and the Llama-3-Instruct stand-in (LlamaForCausalLM,
header template) on an OpenAI `messages` dataset and on a GSM8K dataset uploaded over HTTP.

For each (family, dataset) pair: the dataset is uploaded (POST /v1/datasets), a 2-step remix-grpo job
names it by id (POST /v1/jobs with an admin key, since the model is a local folder), the job succeeds,
the prompts of its `samples` events are the rows rendered with the model's own chat template, and the
final checkpoint downloads as a tar.gz that transformers loads and generates from with
`apply_chat_template(..., add_generation_prompt=True)`.

The stand-ins have random weights and never solve a sum: `math_verify` (which defines accuracy) scores 0,
and a regex reward on any digit gives the groups reward variance, so the learner has something to do.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker
from worker_testing import ManagedProcess, running_api, service_env, wait_for

from remix_engine.standins import LLAMA3_INSTRUCT, QWEN25_INSTRUCT
from service.repositories.tenants import create_api_key, get_or_create_tenant
from service.settings import Settings
from worker.commands import celery_worker_argv

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 600
FAMILIES = {QWEN25_INSTRUCT: "Qwen2ForCausalLM", LLAMA3_INSTRUCT: "LlamaForCausalLM"}
DATASETS = ("messages", "gsm8k")
PAIRS = [(3, 4), (12, 5), (20, 22), (7, 8), (31, 9), (14, 14), (50, 25), (6, 60)]
NAMES = ("Natalia", "Weng", "Betty", "Julie")


def messages_rows() -> list[dict[str, Any]]:
    """OpenAI chat rows: some with a system turn, one with an earlier exchange, the answer in `answer`."""
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        turns: list[dict[str, str]] = []
        if i % 2 == 0:
            turns.append({"role": "system", "content": "You are a careful calculator. Box the result."})
        if i == 3:
            turns += [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}]
        turns.append({"role": "user", "content": f"What is {a}+{b}?"})
        rows.append({"messages": turns, "answer": str(a + b)})
    return rows


def gsm8k_rows() -> list[dict[str, Any]]:
    """GSM8K's layout: `question`, and a worked `answer` ending in "#### N"."""
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        name = NAMES[i % len(NAMES)]
        rows.append(
            {
                "question": f"{name} has {a} apples and buys {b} more. How many apples does {name} have now?",
                "answer": f"{name} has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}",
            }
        )
    return rows


def conversations(dataset: str) -> list[list[dict[str, str]]]:
    """The turns each row is prompted with (the job's prompt template is the default "{prompt}")."""
    if dataset == "messages":
        return [row["messages"] for row in messages_rows()]
    return [[{"role": "user", "content": row["question"]}] for row in gsm8k_rows()]


def expected_prompts(model_dir: Path, dataset: str) -> set[str]:
    """Each row rendered as apply_chat_template does; a BOS the tokenizer adds itself is not repeated in the text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = set()
    for turns in conversations(dataset):
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if tokenizer.bos_token and tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id:
            text = text.removeprefix(tokenizer.bos_token)
        texts.add(text)
    return texts


def job_config(model_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name_or_path": str(model_dir)},
        "data": {"eval_size": 2, "max_prompt_tokens": 256},
        "rollout": {"prompts_per_step": 4, "group_size": 2, "max_new_tokens": 8},
        "reward": {
            "functions": [
                {"name": "math_verify"},
                {"name": "regex", "weight": 0.5, "kwargs": {"pattern": "[0-9]", "target": "completion"}},
            ]
        },
        # T = 1: step 1 is a Mix step, step 2 on-policy after reincarnation
        "algorithm": {"name": "remix-grpo", "reincarnation_step": 1, "lambda_start_step": 1, "minibatch_size": 4},
        "optim": {"lr": 1e-3},
        "total_steps": 2,
        "checkpoint_every": 2,
        "log_completions": 4,
        "seed": 0,
    }


# --------------------------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One artifact store for the module: the API and the worker must see the same files."""
    return Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        task_queue=f"gpu-real-{uuid.uuid4().hex[:6]}",
        heartbeat_seconds=0.5,
        stale_after_seconds=30.0,
        max_attempts=1,
    )


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real API of the module, on its settings."""
    with running_api(settings, tmp_path_factory.mktemp("api") / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """One real `celery worker -c 1` for the whole module: the jobs queue up and run one after another."""
    args = celery_worker_argv(
        [settings.task_queue, "maintenance"], "realarch@%h", extra=["--without-gossip", "--without-mingle"]
    )
    process = ManagedProcess(args, service_env(settings), tmp_path_factory.mktemp("worker") / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin_client(api_url: str, engine: Engine) -> Iterator[httpx.Client]:
    """An admin key (a local model folder is a server path: admin keys only)."""
    with sessionmaker(engine, expire_on_commit=False)() as session:  # the repository functions commit
        tenant = get_or_create_tenant(session, f"real-arch-{uuid.uuid4().hex[:8]}")
        _row, key = create_api_key(session, tenant, name="real-architectures", is_admin=True)
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        yield http


def _upload(client: httpx.Client, dataset: str) -> dict[str, Any]:
    rows, fields = (messages_rows(), {}) if dataset == "messages" else (
        gsm8k_rows(),
        {"prompt_field": "question", "answer_field": "answer"},
    )
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    response = client.post("/v1/datasets", files={"file": (f"{dataset}.jsonl", body)}, data=fields)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def trained_jobs(
    admin_client: httpx.Client, worker: ManagedProcess, qwen_standin: Path, llama_standin: Path
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every (family, dataset) job, submitted at once over HTTP and trained by the module's worker."""
    folders = {QWEN25_INSTRUCT: qwen_standin, LLAMA3_INSTRUCT: llama_standin}
    datasets = {name: _upload(admin_client, name) for name in DATASETS}
    jobs = {}
    for family, folder in folders.items():
        for name, dataset in datasets.items():
            response = admin_client.post(
                "/v1/jobs",
                json={"name": f"{family}-{name}", "dataset_id": dataset["id"], "config": job_config(folder)},
            )
            assert response.status_code == 202, response.text
            jobs[(family, name)] = {"id": response.json()["id"], "model_dir": folder, "dataset": dataset}

    def all_finished() -> bool:
        assert worker.alive(), worker.log_text()
        for job in jobs.values():
            job["state"] = admin_client.get(f"/v1/jobs/{job['id']}").json()
        return all(job["state"]["status"] in ("succeeded", "failed", "cancelled") for job in jobs.values())

    started = time.monotonic()
    wait_for(all_finished, timeout=JOB_TIMEOUT, what="the four jobs to finish", interval=1, on_timeout=worker.log_text)
    print(f"4 jobs trained in {time.monotonic() - started:.0f}s")
    return jobs


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_real_architecture_trains_from_an_uploaded_dataset_and_its_checkpoint_generates(
    family: str, dataset: str, trained_jobs, admin_client: httpx.Client, worker: ManagedProcess, tmp_path: Path
) -> None:
    job = trained_jobs[(family, dataset)]
    state = job["state"]

    # the job succeeded, two steps, with the rows it was given
    assert state["status"] == "succeeded", f"{state.get('error')}\n{worker.log_text()[-4000:]}"
    assert state["current_step"] == 2
    assert job["dataset"]["num_rows"] == len(PAIRS)
    metrics = admin_client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["metrics"]["fresh_samples"] > 0 for m in metrics)

    # its samples are the dataset's rows laid out by the model's own chat template
    events = admin_client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
    kinds = [e["kind"] for e in events]
    assert "reincarnated" in kinds and kinds[-1] == "succeeded"
    prompts = [s["prompt"] for e in events if e["kind"] == "samples" for s in e["payload"]["samples"]]
    assert prompts, kinds
    expected = expected_prompts(job["model_dir"], dataset)
    assert set(prompts) <= expected, sorted(set(prompts) - expected)[:1]
    qwen = family == QWEN25_INSTRUCT
    marker = "<|im_start|>assistant\n" if qwen else "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert all(p.endswith(marker) for p in prompts)

    # and the final checkpoint downloads, loads in transformers and generates from a chat prompt
    checkpoints = admin_client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step"] for c in checkpoints] == [2]
    archive = admin_client.get(f"/v1/jobs/{job['id']}/checkpoints/2/download")
    assert archive.status_code == 200, archive.text[:500]
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "step-000002"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == FAMILIES[family]
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(job["model_dir"]).chat_template
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :]), str)
