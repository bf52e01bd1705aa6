"""The vLLM rollout backend without vLLM: refused clearly where it cannot run, and its bookkeeping
(requests, per-sample seeds, log-probs, batch layout, prompt budget, stop strings and truncation, weight
syncs, sleep/wake, the trainer's random draws) checked against a stand-in `vllm` module (vllm_standin.py)
that enforces what vLLM 0.31 enforces. The real engine runs in tests/remix_engine/test_gpu.py.
"""

from __future__ import annotations

import contextlib
import random
import sys
import types

import numpy as np
import pytest
import torch
import vllm_standin
from vllm_standin import EOS, LLM, GarbageWeightsError, SamplingParams, SleeplessLLM, WouldHangError

from remix_engine.config import ModelConfig, RolloutConfig, TrainConfig
from remix_engine.context_length import ContextLengthError
from remix_engine.rollout import vllm as vllm_backend
from remix_engine.rollout.engine import finish_response
from remix_engine.rollout.vllm import (
    RolloutBackendUnavailable,
    VLLMRolloutEngine,
    backend_unavailable_reason,
    check_backend_available,
)
from remix_engine.toy import build_char_tokenizer, build_untrained_model


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(vllm_backend, "backend_unavailable_reason", lambda _device: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", vllm_standin.record_empty_cache)
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29555",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }.items():
        monkeypatch.setenv(name, value)  # restored afterwards: the engine only sets missing ones
    LLM.last = None
    with _global_generators_kept():  # the stand-in reseeds them as vLLM does; later tests keep theirs
        yield module
    LLM.last = None


@contextlib.contextmanager
def _global_generators_kept():
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def model(tokenizer):
    return build_untrained_model(tokenizer, seed=0)


def make_engine(model, tokenizer, *, model_path="builtin:tiny-arith", **rollout):
    cfg = RolloutConfig(**{"backend": "vllm", "max_new_tokens": 6, **rollout})
    return VLLMRolloutEngine(
        model,
        tokenizer,
        cfg,
        model_cfg=ModelConfig(name_or_path=model_path),
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
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda _name: None)
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
    engine = make_engine(model, tokenizer, vllm={"gpu_memory_utilization": 0.25})
    llm = LLM.last
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
    assert engine.max_model_len == 64 == llm.max_model_len  # what vLLM serves: accepted as asked
    # the learner's weights replace the checkpoint's right away, and the prefix cache is dropped
    assert llm.log == [("load_weights", len(model.state_dict())), ("reset_prefix_cache",)]
    assert set(llm.model.loaded) == set(model.state_dict())
    assert engine.llm.weights_current


@pytest.mark.usefixtures("fake_vllm")
def test_every_response_is_its_own_seeded_request_with_vllm_log_probs(model, tokenizer):
    engine = make_engine(model, tokenizer, temperature=0.7)
    prompts = ["1+2=", "30+40="]
    seeds = [11, 12, 13, 14]

    batch = engine.generate(
        prompts, ["3", "70"], [5, 9], group_size=2, seeds=seeds, policy_version=4, group_id_start=40
    )

    requests, params = LLM.last.requests[-1]
    encoded = tokenizer(prompts)["input_ids"]
    assert [r["prompt_token_ids"] for r in requests] == [encoded[0], encoded[0], encoded[1], encoded[1]]
    assert [p.seed for p in params] == seeds
    for p in params:
        # the whole tempered distribution: the one the learner scores
        assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.logprobs) == (0.7, 1.0, 0, 6, 0)
        assert (p.n, p.repetition_penalty, p.min_p, p.stop_token_ids) == (1, 1.0, 0.0, [EOS])
    assert batch.group_ids.tolist() == [40, 40, 41, 41] and batch.prompt_index.tolist() == [5, 5, 9, 9]
    assert batch.seeds.tolist() == seeds and batch.policy_version.tolist() == [4] * 4
    assert batch.answers == ["3", "3", "70", "70"] and batch.prompts == [prompts[0]] * 2 + [prompts[1]] * 2
    # prompts left-padded as the HF engine pads them
    assert batch.prompt_ids[0][batch.prompt_mask[0]].tolist() == encoded[0]
    assert batch.prompt_mask[0].tolist()[: batch.prompt_ids.shape[1] - len(encoded[0])] == [False] * 2
    for row, tokens in enumerate(LLM.last.responses[-1]):
        stop = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
        assert batch.response_ids[row][batch.response_mask[row]].tolist() == tokens[:stop]
        expected = torch.tensor([-0.1 * (i + 1) for i in range(stop)])
        torch.testing.assert_close(batch.rollout_logp[row][:stop], expected)
        assert batch.rollout_logp[row][stop:].abs().sum() == 0
        assert batch.completions[row] == tokenizer.decode(tokens[:stop], skip_special_tokens=True)


@pytest.mark.usefixtures("fake_vllm")
def test_vllm_sleeps_during_learning_and_wakes_with_fresh_weights(model, tokenizer):
    engine = make_engine(model, tokenizer)
    log = LLM.last.log
    log.clear()

    engine.generate(["1+1="], ["2"], [0], group_size=2, seeds=[1, 2], policy_version=1, group_id_start=0)
    assert log == [("generate", 2), ("sleep", 2)]  # released for the learner

    log.clear()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # an optimizer step
    engine.sync_weights(model)
    # torch's cache is emptied before each wake: sleep mode's allocator cannot use what torch caches
    assert log == [
        ("empty_cache",),
        ("wake_up", ("weights",)),
        ("load_weights", len(model.state_dict())),
        ("reset_prefix_cache",),
    ]
    torch.testing.assert_close(LLM.last.model.loaded["lm_head.weight"], model.lm_head.weight)

    log.clear()
    engine.greedy(["2+2="])
    assert log == [("empty_cache",), ("wake_up", ("kv_cache",)), ("generate", 1), ("sleep", 2)]

    log.clear()  # generating again without a sync in between: the released weights are reloaded first
    engine.greedy(["2+2="])
    assert log == [
        ("empty_cache",),
        ("wake_up", ("weights",)),
        ("load_weights", len(model.state_dict())),
        ("reset_prefix_cache",),
        ("empty_cache",),
        ("wake_up", ("kv_cache",)),
        ("generate", 1),
        ("sleep", 2),
    ]


def test_without_sleep_mode_vllm_keeps_its_memory(fake_vllm, model, tokenizer):
    fake_vllm.LLM = SleeplessLLM
    engine = make_engine(model, tokenizer)
    assert LLM.last.kwargs["enable_sleep_mode"] is False
    LLM.last.log.clear()
    engine.greedy(["1+1="])
    engine.sync_weights(model)
    assert LLM.last.log == [
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
    params = LLM.last.requests[-1][1]
    assert [(p.temperature, p.max_tokens, p.seed) for p in params] == [(0.0, 4, None)] * 2
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    view.generate(["1+1="], ["2"], [0], group_size=1, seeds=[9], policy_version=0, group_id_start=0)
    assert LLM.last.requests[-1][1][0].temperature == 0.6


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
    log = LLM.last.log
    log.clear()

    metrics = trainer.train_step()

    assert ("generate", 4) in log
    assert log[-2:] == [("load_weights", len(trainer.policy.state_dict())), ("reset_prefix_cache",)]
    assert metrics["rollout_logp_mismatch_max"] >= 0  # the learner recomputes behaviour log-probs
    for name, value in trainer.policy.state_dict().items():
        torch.testing.assert_close(LLM.last.model.loaded[name], value)  # vLLM samples the new policy


# ----------------------------------------------------------------------------- the prompt budget


@pytest.mark.usefixtures("fake_vllm")
def test_a_prompt_longer_than_the_context_is_left_truncated_to_leave_room_for_the_response(model, tokenizer):
    engine = make_engine(model, tokenizer)  # max_model_len 64 (the model's positions), max_new_tokens 6
    long_prompt = "12+34=" * 20  # 121 tokens: vLLM would refuse it, and the whole batch with it
    encoded = tokenizer([long_prompt, "1+1="])["input_ids"]
    assert len(encoded[0]) > engine.max_model_len

    batch = engine.generate(
        [long_prompt, "1+1="], ["46", "2"], [0, 1], group_size=2, seeds=[1, 2, 3, 4], policy_version=1, group_id_start=0
    )

    sent = [r["prompt_token_ids"] for r in LLM.last.requests[-1][0]]
    assert sent == [encoded[0][-58:]] * 2 + [encoded[1]] * 2  # 64 - 6 tokens: its end, as the HF engine keeps
    assert batch.prompt_mask.sum(dim=1).tolist() == [58, 58, len(encoded[1]), len(encoded[1])]
    assert batch.prompt_ids[0][batch.prompt_mask[0]].tolist() == encoded[0][-58:]
    # greedy decoding with a longer response keeps room for all of it
    engine.greedy([long_prompt], max_new_tokens=10)
    assert [len(r["prompt_token_ids"]) for r in LLM.last.requests[-1][0]] == [54]


@pytest.mark.usefixtures("fake_vllm")
def test_responses_that_fill_the_context_are_refused_naming_the_sizes(model, tokenizer):
    with pytest.raises(ContextLengthError, match="rollout.max_new_tokens 64 leaves no room for a prompt.*at most 64"):
        make_engine(model, tokenizer, max_new_tokens=64)  # the tiny model has 64 positions
    assert LLM.last is None  # refused before vLLM was started
    engine = make_engine(model, tokenizer, max_new_tokens=63)  # a one-token prompt still fits
    assert engine.max_model_len == 64
    with pytest.raises(ContextLengthError, match="max_new_tokens 70"):
        engine.greedy(["1+1="], max_new_tokens=70)
    with pytest.raises(ContextLengthError):
        engine.with_config(engine.cfg.model_copy(update={"max_new_tokens": 64}))


@pytest.mark.usefixtures("fake_vllm")
def test_an_empty_prompt_is_refused_before_it_reaches_vllm(model, tokenizer, monkeypatch):
    engine = make_engine(model, tokenizer)
    monkeypatch.setattr(engine, "tokenizer", lambda texts, padding: {"input_ids": [[5, 6], []]})
    with pytest.raises(ValueError, match=r"prompts \[1\] encode to no tokens"):
        engine.greedy(["a", ""])
    assert LLM.last.requests == []


def test_a_vllm_job_whose_responses_fill_the_context_fails_at_start(fake_vllm, monkeypatch, tmp_path):
    from remix_engine import trainer as trainer_module

    def no_loading(*_args, **_kwargs):
        raise AssertionError("weights were loaded before the context was checked")

    monkeypatch.setattr(trainer_module, "load_policy", no_loading)
    cfg = TrainConfig.model_validate({"rollout": {"backend": "vllm", "max_new_tokens": 64}})
    with pytest.raises(ContextLengthError, match="rollout.max_new_tokens 64 leaves no room"):
        trainer_module.Trainer(cfg, tmp_path, device="cpu")


# ----------------------------------------------------------------------------- sampling temperature


@pytest.mark.usefixtures("fake_vllm")
def test_a_temperature_vllm_would_change_never_reaches_it(model, tokenizer):
    assert SamplingParams(temperature=0.005).temperature == 0.01  # what vLLM would sample at instead
    cold = RolloutConfig(backend="hf", temperature=0.005).model_copy(update={"backend": "vllm"})
    with pytest.raises(ValueError, match=r"rollout.temperature 0.005 is outside \[0.01, 2.0\]"):
        VLLMRolloutEngine(
            model,
            tokenizer,
            cold,
            model_cfg=ModelConfig(),
            weights=lambda: model.state_dict().items(),
            max_prompt_tokens=512,
            device="cpu",
        )
    engine = make_engine(model, tokenizer, temperature=0.01)
    for unvalidated in (0.005, 2.5):  # an evaluation view is a model_copy: pydantic does not validate it
        with pytest.raises(ValueError, match="the evaluation temperature"):
            engine.with_config(engine.cfg.model_copy(update={"temperature": unvalidated}))
    engine.generate(["1+1="], ["2"], [0], group_size=1, seeds=[1], policy_version=0, group_id_start=0)
    assert LLM.last.requests[-1][1][0].temperature == 0.01  # sampled at the temperature the learner uses


# ----------------------------------------------------------------------------- the stand-in itself


def test_the_stand_in_refuses_keywords_and_values_vllm_refuses():
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_seq_len'"):
        LLM("/models/x", max_seq_len=64)
    with pytest.raises(TypeError, match="unexpected keyword argument 'logprob_mode'"):
        SamplingParams(logprob_mode="processed_logprobs")
    with pytest.raises(ValueError, match="greater than the derived max_model_len"):
        LLM("/models/x", max_model_len=65)
    for bad in ({"temperature": 2.5}, {"top_p": 0.0}, {"top_k": -2}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    greedy = SamplingParams(temperature=0.0, top_p=0.5, top_k=3)
    assert (greedy.top_p, greedy.top_k) == (1.0, 0)


def test_the_stand_in_refuses_prompts_vllm_refuses_and_stops_at_its_context():
    with _global_generators_kept():
        llm = LLM("/models/x", max_model_len=16, skip_tokenizer_init=True)
    params = SamplingParams(max_tokens=200, seed=1, logprobs=0)
    for ids in ([], list(range(4, 20)), list(range(4, 30))):  # empty, exactly 16, longer
        with pytest.raises(ValueError, match="decoder prompt"):
            llm.generate([{"prompt_token_ids": [5]}, {"prompt_token_ids": ids}], sampling_params=[params] * 2)
    assert llm.requests == []  # one refused prompt fails the whole call
    (output,) = llm.generate([{"prompt_token_ids": list(range(4, 14))}], sampling_params=params)
    assert len(output.outputs[0].token_ids) <= 6  # 16 - 10: the response stops at max_model_len


def test_the_stand_in_sleeps_like_vllm():
    with _global_generators_kept():
        llm = LLM("/models/x", enable_sleep_mode=True, seed=11)
        # vLLM's worker reseeds the process's generators with the engine's seed at start
        assert torch.equal(torch.get_rng_state(), torch.Generator().manual_seed(11).get_state())
        assert random.random() == random.Random(11).random()
        assert np.random.random() == np.random.RandomState(11).random()
    prompt = [{"prompt_token_ids": [5, 6]}]
    llm.model.load_weights([("w", torch.ones(2))])
    llm.sleep(level=2)
    llm.sleep(level=2)  # already asleep: ignored
    with pytest.raises(WouldHangError):
        llm.generate(prompt)
    llm.wake_up(tags=["weights", "kv_cache", "weights_typo"])  # one tag not asleep: nothing wakes
    assert llm.sleeping_tags == {"weights", "kv_cache"}
    llm.wake_up(tags=["weights"])
    llm.wake_up(tags=["weights"])  # no longer asleep: ignored
    llm.wake_up(tags=["kv_cache"])
    with pytest.raises(GarbageWeightsError):  # level 2 discarded the weights; nothing reloaded them
        llm.generate(prompt)
    llm.model.load_weights([("w", torch.ones(2))])
    llm.generate(prompt)
    assert [entry[0] for entry in llm.log] == [
        "load_weights",
        "sleep",
        "sleep ignored",
        "wake_up ignored",
        "wake_up",
        "wake_up ignored",
        "wake_up",
        "load_weights",
        "generate",
    ]


@pytest.mark.usefixtures("fake_vllm")
def test_a_failed_generation_leaves_vllm_asleep_and_the_next_one_works(model, tokenizer, monkeypatch):
    engine = make_engine(model, tokenizer)
    llm = LLM.last

    def refuse(*_args, **_kwargs):
        raise ValueError("refused by vLLM")

    with monkeypatch.context() as patch:
        patch.setattr(llm, "generate", refuse)
        with pytest.raises(ValueError, match="refused by vLLM"):
            engine.greedy(["1+1="])
    assert llm.sleeping_tags == {"weights", "kv_cache"}  # released for the learner all the same
    assert len(engine.greedy(["1+1="])) == 1  # woken (weights reloaded first) and generating again


# ----------------------------------------------------------------------------- the trainer's random draws


def _replaying_config(model_dir: str) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "data": {"eval_size": 4},
            "rollout": {"backend": "vllm", "prompts_per_step": 4, "group_size": 2, "max_new_tokens": 4},
            # an untrained model never boxes an answer; rewarding any digit gives groups with contrast
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            # replayed groups, and minibatches smaller than the batch: the two draws of self.generator
            "algorithm": {"off_policy_fraction": 0.5, "history_window": 2, "utd_ratio": 2, "minibatch_size": 3},
            "optim": {"lr": 1e-3},
            "total_steps": 3,
            "seed": 4,
        }
    )


def _train_recording_draws(cfg: TrainConfig, out, reseed_between_steps) -> tuple[list, dict]:
    from remix_engine.trainer import Trainer

    trainer = Trainer(cfg, out, device="cpu")
    assert not any(module.training for module in trainer.policy.modules())  # eval mode: no dropout draws
    sample = trainer.buffer.sample
    draws: list = []

    def recording_sample(num_groups, generator, **options):
        picked = sample(num_groups, generator, **options)
        draws.append(None if picked is None else picked.group_ids.tolist())
        return picked

    trainer.buffer.sample = recording_sample
    for step in range(cfg.total_steps):
        reseed_between_steps(step)
        trainer.train_step()
        draws.append([p["prompt_token_ids"] for p in LLM.last.requests[-1][0]])
    return draws, {k: v.clone() for k, v in trainer.policy.state_dict().items()}


@pytest.mark.usefixtures("fake_vllm")
def test_vllm_reseeding_the_global_generators_changes_none_of_the_trainer_s_draws(tmp_path, monkeypatch):
    # vLLM's worker calls set_random_seed(seed) in this process when the engine starts: Python's, numpy's
    # and torch's global generators are reset. Replay draws, minibatch order, prompt order and response
    # seeds must not notice, whether that happens at engine start or (as here) before every step.
    path = tmp_path / "model"
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    cfg = _replaying_config(str(path))

    with monkeypatch.context() as quiet:
        quiet.setattr(vllm_standin, "set_random_seed", lambda _seed: None)  # an engine that leaves them alone
        undisturbed, weights = _train_recording_draws(cfg, tmp_path / "a", lambda _step: None)
    reseeded, reseeded_weights = _train_recording_draws(
        cfg, tmp_path / "b", lambda step: vllm_standin.set_random_seed(1000 + step)
    )

    assert undisturbed[2] and undisturbed[4]  # groups were replayed in steps 2 and 3 (draws, prompts per step)
    assert reseeded == undisturbed
    for name, value in weights.items():
        torch.testing.assert_close(reseeded_weights[name], value, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the GPU test's child process


def test_the_result_of_a_vllm_child_process_is_found_among_its_log_lines():
    import subprocess

    from child_result import marked_result, print_result_line

    # vLLM logs to stdout, also after the result: the last line is a log line (the GPU test once read it).
    child = "import json\nprint('INFO 05-01 llm.py:1] starting')\n" + print_result_line("[[5, 6], [7]]")
    child += "\nprint('INFO 05-01 core.py:2] shutting down')"
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1].startswith("INFO")
    assert marked_result(run.stdout) == [[5, 6], [7]]
    with pytest.raises(AssertionError, match="expected one REMIX_RESULT line"):
        marked_result("INFO only logs\n")


# ------------------------------------------------------------------------------- stop strings, truncation


@pytest.mark.usefixtures("fake_vllm")
def test_a_response_vllm_ends_by_length_is_truncated(model, tokenizer):
    engine = make_engine(model, tokenizer)
    batch = engine.generate(["1+2="] * 8, ["3"] * 8, list(range(8)), group_size=1, seeds=list(range(8)),
                            policy_version=1, group_id_start=0)  # fmt: skip
    returned = LLM.last.responses[-1]
    assert batch.truncated.tolist() == [tokens[-1] != EOS for tokens in returned]  # finish_reason "length"
    assert 0 < int(batch.truncated.sum()) < 8
    assert LLM.last.kwargs["skip_tokenizer_init"] is True  # no stop strings: vLLM needs no tokenizer
    _, params = LLM.last.requests[-1]
    assert all(p.stop == [] and p.detokenize is False for p in params)


@pytest.mark.usefixtures("fake_vllm")
def test_stop_strings_reach_vllm_with_its_tokenizer_and_end_responses_as_the_hf_engine_does(
    model, tokenizer, random_model_dir
):
    # a model folder with a tokenizer: vLLM's detokenizer needs one to match stop strings
    stop = ["5", "ab", "}"]
    engine = make_engine(model, tokenizer, model_path=random_model_dir, stop=stop, max_new_tokens=30)
    seeds = list(range(24))
    batch = engine.generate(["1+2="] * 24, ["3"] * 24, list(range(24)), group_size=1, seeds=seeds,
                            policy_version=1, group_id_start=0)  # fmt: skip
    llm = LLM.last
    assert llm.kwargs["skip_tokenizer_init"] is False
    _, params = llm.requests[-1]
    for p in params:
        assert (p.stop, p.include_stop_str_in_output, p.detokenize, p.stop_token_ids) == (stop, True, True, [EOS])

    # what an engine that ignored them (vLLM without its tokenizer) would have returned for the same seeds
    unstopped = make_engine(model, tokenizer, max_new_tokens=30)
    unstopped.generate(["1+2="] * 24, ["3"] * 24, list(range(24)), group_size=1, seeds=seeds,
                       policy_version=1, group_id_start=0)  # fmt: skip
    stops = 0
    for row, (full, returned) in enumerate(zip(LLM.last.responses[-1], llm.responses[-1], strict=True)):
        trained = batch.response_ids[row][batch.response_mask[row]].tolist()
        # the rule both engines apply (engine.finish_response): the same tokens, text and flag
        kept, text, truncated = finish_response(full, tokenizer, [EOS], stop)
        assert (trained, batch.completions[row], bool(batch.truncated[row])) == (full[:kept], text, truncated)
        assert returned == trained  # vLLM stopped generating at the token that completes the stop string
        if any(text.endswith(s) for s in stop):
            stops += 1
            assert not truncated and returned[-1] != EOS
    assert stops > 3


def test_the_stand_in_ignores_stop_strings_without_a_tokenizer_and_refuses_bad_ones_like_vllm(random_model_dir):
    with pytest.raises(ValueError, match="stop cannot contain an empty string"):
        SamplingParams(stop=["x", ""])
    with pytest.raises(ValueError, match="only supported when detokenize is True"):
        SamplingParams(stop=["x"], detokenize=False)
    prompt = [{"prompt_token_ids": [5, 6]}]
    every_char = [chr(c) for c in range(33, 127)]  # any printable character stops, when stop strings work
    params = SamplingParams(max_tokens=20, seed=3, stop=every_char[:50], logprobs=0)
    with _global_generators_kept():
        blind = LLM(random_model_dir, skip_tokenizer_init=True)  # vLLM's detokenizer is then a no-op
        seeing = LLM(random_model_dir)
    (ignored,) = blind.generate(prompt, sampling_params=params)
    (stopped,) = seeing.generate(prompt, sampling_params=params)
    tokens = stopped.outputs[0].token_ids
    assert ignored.outputs[0].token_ids[: len(tokens)] == tokens and len(tokens) < len(ignored.outputs[0].token_ids)
    assert stopped.outputs[0].finish_reason == "stop" and stopped.outputs[0].stop_reason in params.stop
    assert not stopped.outputs[0].text.endswith(stopped.outputs[0].stop_reason)  # cut before it by default
