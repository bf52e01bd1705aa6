"""Job validation at submission: the memory pre-flight (REMIX_GPU_MEMORY_GIB, 80 GiB unless set) refuses a
job that cannot fit one GPU before it is queued, the operator's REMIX_MAX_TOKENS_PER_STEP caps the tokens a
step generates, and multi-process jobs (distributed.num_processes) are accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from service_testing import Caller, assert_problem, queued_messages

from service.main import create_app
from service.settings import Settings

# A Llama-2-7B-shaped config.json (the docs/scaling.md example), as it sits in a Hugging Face cache.
LLAMA_7B = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "tie_word_embeddings": False,
}
BIG_JOB = {
    "model": {"dtype": "bfloat16"},
    "data": {"max_prompt_tokens": 512},
    "rollout": {
        "prompts_per_step": 64,
        "group_size": 8,
        "max_new_tokens": 1024,
        "generation_batch_size": 256,
    },
    "algorithm": {"minibatch_size": 64},
}


@pytest.fixture(scope="module")
def gpu_client(settings: Settings) -> TestClient:
    """The API of a fleet whose GPUs have 80 GiB."""
    return TestClient(create_app(settings.model_copy(update={"gpu_memory_gib": 80.0})))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty local Hugging Face cache (the API never downloads)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    yield tmp_path / "hub"


def cache_config(hub_cache: Path, repo_id: str, config: dict) -> None:
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def post(client: TestClient, caller: Caller, config: dict, **body) -> object:
    return client.post("/v1/jobs", json={"config": config, **body}, headers=caller.headers)


def test_a_job_that_cannot_fit_is_refused_with_the_knobs_to_turn(
    gpu_client: TestClient, alice: Caller, hub_cache: Path, settings: Settings, redis_client: Redis
) -> None:
    cache_config(hub_cache, "acme/llama-7b", LLAMA_7B)
    before = redis_client.llen(settings.task_queue)

    response = post(gpu_client, alice, BIG_JOB, base_model="acme/llama-7b")

    body = assert_problem(response, 422, "job needs about 523.23 GiB per device but 80.00 GiB is available")
    assert body["type"] == "urn:remix:problem:insufficient-gpu-memory"
    assert body["title"] == "Job does not fit in GPU memory"
    for knob in (
        "lower algorithm.minibatch_size (now 64)",
        "lower rollout.generation_batch_size (now 256) or rollout.max_new_tokens (now 1024)",
        "enable LoRA (lora.enabled: true)",
    ):
        assert knob in body["detail"]
    assert body["available_gib"] == 80.0 and body["estimate_gib"] == pytest.approx(523.23, abs=0.01)
    assert list(body["largest"]) == ["activations", "kv_cache", "policy_copies"]
    assert redis_client.llen(settings.task_queue) == before  # nothing was queued
    assert gpu_client.get("/v1/jobs", headers=alice.headers).json()["data"] == []  # nor stored


def test_turning_the_knobs_makes_it_fit(gpu_client: TestClient, alice: Caller, hub_cache: Path) -> None:
    cache_config(hub_cache, "acme/llama-7b", LLAMA_7B)
    smaller = {
        **BIG_JOB,
        "rollout": {**BIG_JOB["rollout"], "generation_batch_size": 32},
        "algorithm": {"minibatch_size": 4},
        "lora": {"enabled": True},
    }

    response = post(gpu_client, alice, smaller, base_model="acme/llama-7b")

    assert response.status_code == 202, response.text


def test_processes_share_the_batch_so_more_of_them_need_less_memory_each(
    gpu_client: TestClient, alice: Caller, hub_cache: Path
) -> None:
    cache_config(hub_cache, "acme/llama-7b", LLAMA_7B)
    job = {**BIG_JOB, "algorithm": {"minibatch_size": 8}, "lora": {"enabled": True}}
    refused = post(gpu_client, alice, job, base_model="acme/llama-7b")
    assert_problem(refused, 422, "per device")

    split = {**job, "distributed": {"num_processes": 8}}
    accepted = post(gpu_client, alice, split, base_model="acme/llama-7b")
    assert accepted.status_code == 202, accepted.text


def test_the_builtin_model_is_checked_too(settings: Settings, alice: Caller) -> None:
    tiny_gpu = TestClient(create_app(settings.model_copy(update={"gpu_memory_gib": 0.001})))
    response = post(tiny_gpu, alice, {"total_steps": 2}, base_model="builtin:tiny-arith")
    assert_problem(response, 422, "is available")


def test_the_builtin_reasoning_job_is_accepted_and_its_context_checked(gpu_client: TestClient, alice: Caller) -> None:
    job = {"data": {"train_path": "builtin:column-addition"}, "rollout": {"max_new_tokens": 96}, "total_steps": 2}
    accepted = post(gpu_client, alice, job, base_model="builtin:tiny-reasoner")
    assert accepted.status_code == 202, accepted.text
    too_long = {**job, "rollout": {"backend": "vllm", "max_new_tokens": 128}}  # the reasoner has 128 positions
    assert_problem(post(gpu_client, alice, too_long, base_model="builtin:tiny-reasoner"), 422, "max_new_tokens")


@pytest.mark.usefixtures("hub_cache")
def test_models_whose_config_is_not_at_hand_are_not_checked(gpu_client: TestClient, alice: Caller) -> None:
    # not in the local cache: the worker's own pre-flight decides at job start
    response = post(gpu_client, alice, BIG_JOB, base_model="acme/not-downloaded")
    assert response.status_code == 202, response.text


@pytest.mark.usefixtures("hub_cache")
def test_local_model_folders_of_admins_are_checked(gpu_client: TestClient, admin: Caller, tmp_path: Path) -> None:
    folder = tmp_path / "llama-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    response = post(gpu_client, admin, BIG_JOB, base_model=str(folder))
    assert_problem(response, 422, "To fit: lower algorithm.minibatch_size (now 64)")


def test_without_a_gpu_size_the_default_80_gib_budget_is_checked(
    client: TestClient, alice: Caller, hub_cache: Path, settings: Settings
) -> None:
    # REMIX_GPU_MEMORY_GIB unset: every job still gets the pre-flight, against one 80 GiB GPU.
    assert settings.gpu_memory_gib == 80.0
    cache_config(hub_cache, "acme/llama-7b", LLAMA_7B)
    response = post(client, alice, BIG_JOB, base_model="acme/llama-7b")
    assert_problem(response, 422, "job needs about 523.23 GiB per device but 80.00 GiB is available")
    fits = {
        **BIG_JOB,
        "rollout": {**BIG_JOB["rollout"], "generation_batch_size": 32},
        "algorithm": {"minibatch_size": 4},
    }
    response = post(client, alice, {**fits, "lora": {"enabled": True}}, base_model="acme/llama-7b")
    assert response.status_code == 202, response.text


def test_tokens_per_step_are_capped_by_the_operator_setting(
    settings: Settings, alice: Caller, redis_client: Redis
) -> None:
    capped = TestClient(create_app(settings.model_copy(update={"max_tokens_per_step": 1000})))
    before = redis_client.llen(settings.task_queue)
    over = {"rollout": {"prompts_per_step": 10, "group_size": 2, "max_new_tokens": 51}, "total_steps": 1}
    body = assert_problem(post(capped, alice, over), 422, "a step generates up to 1020 tokens")
    assert [e["field"] for e in body["errors"]] == [
        "config.rollout.prompts_per_step",
        "config.rollout.group_size",
        "config.rollout.max_new_tokens",
    ]
    assert "at most 1000 (REMIX_MAX_TOKENS_PER_STEP)" in body["detail"]
    assert redis_client.llen(settings.task_queue) == before
    at_the_cap = {"rollout": {"prompts_per_step": 10, "group_size": 2, "max_new_tokens": 50}, "total_steps": 1}
    response = post(capped, alice, at_the_cap)
    assert response.status_code == 202, response.text


def test_the_default_token_cap_fits_real_jobs_and_refuses_the_largest_rollout(
    client: TestClient, alice: Caller
) -> None:
    # Default 2**25 tokens per step: 512 prompts x 16 responses x 4096 tokens is allowed...
    real = {
        "rollout": {"prompts_per_step": 512, "group_size": 16, "max_new_tokens": 4096, "generation_batch_size": 64},
        "algorithm": {"minibatch_size": 16},  # so that the memory pre-flight passes too
        "total_steps": 1,
    }
    response = post(client, alice, real)
    assert response.status_code == 202, response.text
    # ...the largest rollout each field allows on its own is not.
    largest = {"rollout": {"prompts_per_step": 8192, "group_size": 256, "max_new_tokens": 65536}}
    assert_problem(post(client, alice, largest), 422, "config.rollout.max_new_tokens")


def test_multi_process_jobs_are_accepted(
    client: TestClient, alice: Caller, settings: Settings, redis_client: Redis
) -> None:
    response = post(client, alice, {"total_steps": 3, "distributed": {"num_processes": 2}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["config"]["distributed"] == {"strategy": "ddp", "num_processes": 2, "num_nodes": 1}
    assert any(m["kwargs"] == {"job_id": job["id"]} for m in queued_messages(redis_client, settings.task_queue))


def test_more_processes_than_fresh_prompt_groups_are_refused(client: TestClient, alice: Caller) -> None:
    response = post(client, alice, {"rollout": {"prompts_per_step": 5}, "distributed": {"num_processes": 4}})
    assert_problem(response, 422, "distributed.num_processes=4 needs at least 4 fresh prompt groups per step")
    response = post(client, alice, {"distributed": {"num_processes": 0}})
    assert_problem(response, 422, "config.distributed.num_processes")


def test_gpu_memory_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().gpu_memory_gib == 80.0  # the default budget
    monkeypatch.setenv("REMIX_GPU_MEMORY_GIB", "40")
    assert Settings().gpu_memory_gib == 40.0


def test_the_token_cap_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_tokens_per_step == 2**25
    monkeypatch.setenv("REMIX_MAX_TOKENS_PER_STEP", "1000000")
    assert Settings().max_tokens_per_step == 1_000_000


def test_the_api_side_check_never_imports_torch(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    probe = f"""
import sys
from remix_engine.config import TrainConfig
from service.job_config import check_gpu_memory
check_gpu_memory(TrainConfig(), 80.0)  # the builtin model
check_gpu_memory(TrainConfig.model_validate({{"model": {{"name_or_path": {str(folder)!r}}}}}), 1e6)
check_gpu_memory(TrainConfig.model_validate({{"model": {{"name_or_path": "acme/absent"}}}}), 80.0)
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
