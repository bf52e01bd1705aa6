"""The vLLM rollout backend without vLLM: refused clearly where it cannot run, and its bookkeeping
(requests, per-sample seeds, log-probs, batch layout, weight syncs, sleep/wake) checked against a
stand-in `vllm` module that records every call. The real engine runs in tests/remix_engine/test_gpu.py.
"""

from __future__ import annotations

import random
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from remix_engine import vllm_rollout
from remix_engine.config import ModelConfig, RolloutConfig, TrainConfig
from remix_engine.toy import build_char_tokenizer, build_untrained_model
from remix_engine.vllm_rollout import (
    RolloutBackendUnavailable,
    VLLMRolloutEngine,
    backend_unavailable_reason,
    check_backend_available,
)

EOS = 2


class FakeModel:
    def __init__(self, log: list) -> None:
        self.log = log
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights):
        names = []
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()
            names.append(name)
        self.log.append(("load_weights", len(names)))


class FakeLLM:
    """Records calls; samples tokens from a generator seeded by the request's seed."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.log: list = []
        self.model = FakeModel(self.log)
        runner = SimpleNamespace(model=self.model)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        )
        self.requests: list = []  # (prompts, sampling params) of each generate call
        self.responses: list = []  # the token ids it returned
        FakeLLM.last = self

    def generate(self, prompts, sampling_params, use_tqdm):
        assert use_tqdm is False
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.log.append(("generate", len(prompts)))
        self.requests.append((prompts, params))
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            rng = random.Random(0 if p.temperature == 0 else p.seed)
            length = rng.randint(1, p.max_tokens)
            tokens = [rng.randint(4, 100) for _ in range(length)]
            if rng.random() < 0.5:  # stopped at EOS, which vLLM returns as the last token
                tokens[-1] = EOS
            logprobs = [{t: SimpleNamespace(logprob=-0.1 * (i + 1), rank=1)} for i, t in enumerate(tokens)]
            sample = SimpleNamespace(token_ids=tokens, logprobs=logprobs if p.logprobs == 0 else None)
            outputs.append(SimpleNamespace(prompt_token_ids=prompt["prompt_token_ids"], outputs=[sample]))
        self.responses.append([o.outputs[0].token_ids for o in outputs])
        return outputs

    def reset_prefix_cache(self):
        self.log.append(("reset_prefix_cache",))

    def sleep(self, level=1):
        self.log.append(("sleep", level))

    def wake_up(self, tags=None):
        self.log.append(("wake_up", tuple(tags or ())))


class SleeplessLLM(FakeLLM):
    sleep = None  # an old vLLM without sleep mode


class SamplingParams:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update({"logprobs": None, "seed": None, **kwargs})


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(vllm_rollout, "backend_unavailable_reason", lambda _device: None)
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29555",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }.items():
        monkeypatch.setenv(name, value)  # restored afterwards: the engine only sets missing ones
    return module


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def model(tokenizer):
    return build_untrained_model(tokenizer, seed=0)


def make_engine(model, tokenizer, **rollout):
    cfg = RolloutConfig(backend="vllm", max_new_tokens=6, **rollout)
    return VLLMRolloutEngine(
        model,
        tokenizer,
        cfg,
        model_cfg=ModelConfig(name_or_path="builtin:tiny-arith"),
        weights=lambda: model.state_dict().items(),
        max_prompt_tokens=512,
        seed=3,
        device="cpu",
    )


@pytest.fixture(autouse=True)
def _no_tiny_model_build(monkeypatch):
    # The stand-in engine never reads the checkpoint folder: do not build the tiny model for it.
    from remix_engine import modeling

    real = modeling.resolve_model_source
    monkeypatch.setattr(modeling, "resolve_model_source", lambda name: real(name) if "/" in name else f"/models/{name}")


def test_without_cuda_or_vllm_the_backend_is_refused_with_what_is_missing(monkeypatch):
    reason = backend_unavailable_reason("cpu")
    assert reason is not None and reason.startswith("rollout.backend 'vllm' needs a CUDA GPU (this job runs on cpu)")
    assert reason.endswith("use rollout.backend 'hf' on this worker")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(vllm_rollout.importlib.util, "find_spec", lambda _name: None)
    only_package = backend_unavailable_reason("cuda")
    assert only_package is not None and "CUDA" not in only_package
    assert "the vllm package, which is not installed on this worker (pip install 'remix-rft[vllm]'" in only_package
    check_backend_available(RolloutConfig(backend="hf"), "cpu")  # the HF backend runs anywhere
    with pytest.raises(RolloutBackendUnavailable, match="needs the vllm package"):
        check_backend_available(RolloutConfig(backend="vllm"), "cuda")


def test_a_vllm_job_fails_at_start_before_loading_weights(monkeypatch, tmp_path):
    from remix_engine import trainer as trainer_module

    def no_loading(*_args, **_kwargs):
        raise AssertionError("weights were loaded before the backend was checked")

    monkeypatch.setattr(trainer_module, "load_policy", no_loading)
    cfg = TrainConfig.model_validate({"rollout": {"backend": "vllm"}})
    with pytest.raises(RolloutBackendUnavailable, match="rollout.backend 'vllm' needs a CUDA GPU"):
        trainer_module.Trainer(cfg, tmp_path, device="cpu")


@pytest.mark.usefixtures("fake_vllm")
def test_the_engine_is_built_colocated_and_synced_from_the_learner(model, tokenizer):
    engine = make_engine(model, tokenizer, top_k=5, vllm={"gpu_memory_utilization": 0.25})
    llm = FakeLLM.last
    assert llm.kwargs == {
        "model": "/models/builtin:tiny-arith",
        "skip_tokenizer_init": True,
        "dtype": "float32",
        "trust_remote_code": False,
        "seed": 3,
        "tensor_parallel_size": 1,
        "distributed_executor_backend": "external_launcher",
        "gpu_memory_utilization": 0.25,
        "enforce_eager": False,
        "max_num_seqs": 512,
        "logprobs_mode": "processed_logprobs",
        "generation_config": "vllm",
        "enable_sleep_mode": True,
        "max_model_len": 64,  # 512 prompt + 6 new tokens, capped at the tiny model's 64 positions
    }
    # the learner's weights replace the checkpoint's right away, and the prefix cache is dropped
    assert llm.log == [("load_weights", len(model.state_dict())), ("reset_prefix_cache",)]
    assert set(llm.model.loaded) == set(model.state_dict())
    assert engine.llm.weights_current


@pytest.mark.usefixtures("fake_vllm")
def test_every_response_is_its_own_seeded_request_with_vllm_log_probs(model, tokenizer):
    engine = make_engine(model, tokenizer, temperature=0.7, top_p=0.9, top_k=5)
    prompts = ["1+2=", "30+40="]
    seeds = [11, 12, 13, 14]

    batch = engine.generate(
        prompts, ["3", "70"], [5, 9], group_size=2, seeds=seeds, policy_version=4, group_id_start=40
    )

    requests, params = FakeLLM.last.requests[-1]
    encoded = tokenizer(prompts)["input_ids"]
    assert [r["prompt_token_ids"] for r in requests] == [encoded[0], encoded[0], encoded[1], encoded[1]]
    assert [p.seed for p in params] == seeds
    for p in params:
        assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.logprobs) == (0.7, 0.9, 5, 6, 0)
        assert (p.n, p.repetition_penalty, p.min_p, p.stop_token_ids) == (1, 1.0, 0.0, [EOS])
    assert batch.group_ids.tolist() == [40, 40, 41, 41] and batch.prompt_index.tolist() == [5, 5, 9, 9]
    assert batch.seeds.tolist() == seeds and batch.policy_version.tolist() == [4] * 4
    assert batch.answers == ["3", "3", "70", "70"] and batch.prompts == [prompts[0]] * 2 + [prompts[1]] * 2
    # prompts left-padded as the HF engine pads them
    assert batch.prompt_ids[0][batch.prompt_mask[0]].tolist() == encoded[0]
    assert batch.prompt_mask[0].tolist()[: batch.prompt_ids.shape[1] - len(encoded[0])] == [False] * 2
    for row, tokens in enumerate(FakeLLM.last.responses[-1]):
        stop = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
        assert batch.response_ids[row][batch.response_mask[row]].tolist() == tokens[:stop]
        expected = torch.tensor([-0.1 * (i + 1) for i in range(stop)])
        torch.testing.assert_close(batch.rollout_logp[row][:stop], expected)
        assert batch.rollout_logp[row][stop:].abs().sum() == 0
        assert batch.completions[row] == tokenizer.decode(tokens[:stop], skip_special_tokens=True)


@pytest.mark.usefixtures("fake_vllm")
def test_vllm_sleeps_during_learning_and_wakes_with_fresh_weights(model, tokenizer):
    engine = make_engine(model, tokenizer)
    log = FakeLLM.last.log
    log.clear()

    engine.generate(["1+1="], ["2"], [0], group_size=2, seeds=[1, 2], policy_version=1, group_id_start=0)
    assert log == [("generate", 2), ("sleep", 2)]  # released for the learner

    log.clear()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # an optimizer step
    engine.sync_weights(model)
    assert log == [
        ("wake_up", ("weights",)),
        ("load_weights", len(model.state_dict())),
        ("reset_prefix_cache",),
    ]
    torch.testing.assert_close(FakeLLM.last.model.loaded["lm_head.weight"], model.lm_head.weight)

    log.clear()
    engine.greedy(["2+2="])
    assert log == [("wake_up", ("kv_cache",)), ("generate", 1), ("sleep", 2)]

    log.clear()  # generating again without a sync in between: the released weights are reloaded first
    engine.greedy(["2+2="])
    assert log == [
        ("wake_up", ("weights",)),
        ("load_weights", len(model.state_dict())),
        ("reset_prefix_cache",),
        ("wake_up", ("kv_cache",)),
        ("generate", 1),
        ("sleep", 2),
    ]


def test_without_sleep_mode_vllm_keeps_its_memory(fake_vllm, model, tokenizer):
    fake_vllm.LLM = SleeplessLLM
    engine = make_engine(model, tokenizer)
    assert FakeLLM.last.kwargs["enable_sleep_mode"] is False
    FakeLLM.last.log.clear()
    engine.greedy(["1+1="])
    engine.sync_weights(model)
    assert FakeLLM.last.log == [
        ("generate", 1),
        ("load_weights", len(model.state_dict())),
        ("reset_prefix_cache",),
    ]


@pytest.mark.usefixtures("fake_vllm")
def test_greedy_and_the_eval_view_share_one_engine(model, tokenizer):
    engine = make_engine(model, tokenizer, temperature=1.0)
    view = engine.with_config(engine.cfg.model_copy(update={"temperature": 0.6}))
    assert view.llm is engine.llm and view.cfg.temperature == 0.6 and engine.cfg.temperature == 1.0
    texts = view.greedy(["1+1=", "22+33="], max_new_tokens=4)
    params = FakeLLM.last.requests[-1][1]
    assert [(p.temperature, p.max_tokens, p.seed) for p in params] == [(0.0, 4, None)] * 2
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    view.generate(["1+1="], ["2"], [0], group_size=1, seeds=[9], policy_version=0, group_id_start=0)
    assert FakeLLM.last.requests[-1][1][0].temperature == 0.6


@pytest.mark.usefixtures("fake_vllm")
def test_the_trainer_drives_the_vllm_engine(tmp_path):
    from remix_engine.trainer import Trainer

    path = tmp_path / "model"
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": str(path)},
            "data": {"eval_size": 4},
            "rollout": {"backend": "vllm", "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4},
            "algorithm": {"minibatch_size": 4},
            "total_steps": 1,
        }
    )
    trainer = Trainer(cfg, tmp_path / "out", device="cpu")
    assert isinstance(trainer.engine, VLLMRolloutEngine)
    assert trainer.eval_engine.llm is trainer.engine.llm  # one vLLM engine per process
    log = FakeLLM.last.log
    log.clear()

    metrics = trainer.train_step()

    assert ("generate", 4) in log
    assert log[-2:] == [("load_weights", len(trainer.policy.state_dict())), ("reset_prefix_cache",)]
    assert metrics["rollout_logp_mismatch_max"] >= 0  # the learner recomputes behaviour log-probs
    for name, value in trainer.policy.state_dict().items():
        torch.testing.assert_close(FakeLLM.last.model.loaded[name], value)  # vLLM samples the new policy
