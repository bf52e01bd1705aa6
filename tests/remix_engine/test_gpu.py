"""On CUDA: the HF backend in bfloat16 (full and LoRA training steps, checkpoints, the memory
pre-flight), a LoRA job's merged export served by vLLM, and the colocated vLLM rollout backend
(log-probs, per-sample seeds, weight sync, sleep mode, prompts longer than its context).

Marked `gpu`; skipped on machines without CUDA (run them with `pytest -m gpu` on a GPU host). The vLLM
tests are also skipped when the vllm package is not installed.
"""

import pytest
import torch
from child_result import marked_result, print_result_line
from step_pieces import prepare_fresh, scored_rollout
from transformers import AutoModelForCausalLM

from remix_engine.config import TrainConfig
from remix_engine.preflight import InsufficientMemoryError
from remix_engine.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def gpu_config(model_path, **sections):
    data = {
        "model": {"name_or_path": model_path, "dtype": "bfloat16"},
        "data": {"eval_size": 8},
        "rollout": {"prompts_per_step": 8, "group_size": 4, "max_new_tokens": 8},
        "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
        "algorithm": {"reincarnation_step": 1, "minibatch_size": 16},
        "optim": {"lr": 1e-2},
        "total_steps": 2,
        "checkpoint_every": 2,
        "seed": 5,
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return TrainConfig.model_validate(data)


def test_bf16_full_training_on_cuda(random_model_dir, tmp_path):
    trainer = Trainer(gpu_config(random_model_dir), tmp_path, device="cuda")
    assert trainer.policy.dtype == torch.bfloat16 and trainer.policy.device.type == "cuda"
    before = {k: v.detach().clone() for k, v in trainer.policy.named_parameters()}
    result = trainer.train()
    assert result.final_step == 2 and result.last_checkpoint is not None
    changed = [k for k, v in trainer.policy.named_parameters() if not torch.equal(before[k], v)]
    assert changed == list(before)
    reloaded = AutoModelForCausalLM.from_pretrained(result.last_checkpoint, dtype=torch.bfloat16).to("cuda")
    for name, value in trainer.policy.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name


def test_bf16_sampling_log_probs_match_the_learner(random_model_dir, tmp_path):
    trainer = Trainer(gpu_config(random_model_dir), tmp_path, device="cuda")
    fresh = scored_rollout(trainer, 1, 4)
    prepare_fresh(trainer, fresh)
    diff = (fresh.rollout_logp - fresh.behavior_logp).abs() * fresh.response_mask
    assert float(diff.max()) < 0.1  # bf16 forward passes with and without a KV cache


def test_bf16_lora_training_on_cuda(random_model_dir, tmp_path):
    trainer = Trainer(gpu_config(random_model_dir, lora={"enabled": True, "r": 4}), tmp_path, device="cuda")
    base = {k: v.detach().clone() for k, v in trainer.policy.named_parameters() if not v.requires_grad}
    trainer.train_step()
    metrics = trainer.train_step()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    for name, value in trainer.policy.named_parameters():
        if name in base:
            assert torch.equal(base[name], value), name
    path = trainer.save_checkpoint()
    merged = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert not any("lora" in k for k in merged.state_dict())


_VLLM_GREEDY = (
    """
import json, sys
from vllm import LLM, SamplingParams

llm = LLM(model=sys.argv[1], dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True)
prompts = [{"prompt_token_ids": ids} for ids in json.loads(sys.argv[2])]
outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8))
"""
    # vLLM logs to stdout as well, before and after this line: the parent looks for the marked one
    + print_result_line("[list(o.outputs[0].token_ids) for o in outputs]")
)


def test_lora_merged_export_loads_in_vllm(random_model_dir, tmp_path):
    pytest.importorskip("vllm")
    import json
    import subprocess
    import sys

    from remix_engine.rollout import HFRolloutEngine

    cfg = gpu_config(random_model_dir, model={"dtype": "float32"}, lora={"enabled": True, "r": 4})
    trainer = Trainer(cfg, tmp_path, device="cuda")
    trainer.train_step()
    path = trainer.save_checkpoint()
    prompts = [f"{a}+{a + 7}=" for a in range(20, 26)]
    merged = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to("cuda")
    expected = HFRolloutEngine(merged, trainer.tokenizer, cfg.rollout).greedy(prompts, max_new_tokens=8)
    tokenizer = trainer.tokenizer
    del trainer, merged
    torch.cuda.empty_cache()
    # A separate process: vLLM as a user would start it on the exported folder, no trainer around.
    prompt_ids = tokenizer(prompts, padding=False)["input_ids"]  # as both rollout engines encode prompts
    run = subprocess.run(
        [sys.executable, "-c", _VLLM_GREEDY, str(path), json.dumps(prompt_ids)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    generated = marked_result(run.stdout)
    assert tokenizer.batch_decode(generated, skip_special_tokens=True) == expected


def test_preflight_refuses_a_job_larger_than_free_memory(random_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (1024**2, 80 * 1024**3))
    with pytest.raises(InsufficientMemoryError, match="is available"):
        Trainer(gpu_config(random_model_dir), tmp_path, device="cuda")


# ----------------------------------------------------------------------------------- vLLM backend
# One colocated vLLM engine per process: the tests below share one trainer (module scope, in file order)
# and release it at the end. They need the vllm package (pip install 'remix-rft[vllm]').


@pytest.fixture(scope="module")
def vllm_trainer(random_model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    import gc
    import os

    saved_env = dict(os.environ)
    cfg = gpu_config(
        random_model_dir,
        model={"dtype": "float32"},  # float32 on both sides: log-probs and greedy tokens agree closely
        rollout={"backend": "vllm", "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True}},
    )
    trainer = Trainer(cfg, tmp_path_factory.mktemp("vllm-run"), device="cuda")
    yield trainer
    del trainer
    gc.collect()
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except ImportError:
        pass
    torch.cuda.empty_cache()
    os.environ.clear()
    os.environ.update(saved_env)


def test_vllm_engine_is_colocated_and_shared_with_evaluation(vllm_trainer):
    from remix_engine.rollout import VLLMRolloutEngine

    assert isinstance(vllm_trainer.engine, VLLMRolloutEngine)
    assert vllm_trainer.eval_engine.llm is vllm_trainer.engine.llm
    inner = vllm_trainer.engine.llm._inner_model()
    if inner is not None:  # vLLM's own copy holds the learner's weights (vocab rows may be padded)
        vocab = vllm_trainer.policy.config.vocab_size
        embed = inner.model.embed_tokens.weight[:vocab].float()
        torch.testing.assert_close(embed, vllm_trainer.policy.model.embed_tokens.weight.float())


def test_vllm_log_probs_match_the_learner_and_seeds_reproduce(vllm_trainer):
    first = scored_rollout(vllm_trainer, 1, 4)
    prepare_fresh(vllm_trainer, first)
    diff = (first.rollout_logp - first.behavior_logp).abs() * first.response_mask
    assert float(diff.max()) < 1e-2  # vLLM's processed log-probs of the sampled tokens, float32
    again = vllm_trainer.engine.generate(
        first.prompts[::4],
        first.answers[::4],
        first.prompt_index[::4].tolist(),
        group_size=4,
        seeds=first.seeds.tolist(),
        policy_version=1,
        group_id_start=0,
    )
    assert torch.equal(again.response_ids.cpu(), first.response_ids.cpu())  # per-sample seeds


def test_vllm_takes_prompts_longer_than_its_context(vllm_trainer):
    # The random model has 64 positions: vLLM would refuse these prompts, and the whole batch with them.
    engine = vllm_trainer.engine
    prompts = ["12+34=" * 30, "1+1="]
    batch = engine.generate(
        prompts, ["46", "2"], [0, 1], group_size=2, seeds=[1, 2, 3, 4], policy_version=1, group_id_start=0
    )
    budget = engine.max_model_len - vllm_trainer.cfg.rollout.max_new_tokens
    assert int(batch.prompt_mask[0].sum()) == budget < len(vllm_trainer.tokenizer(prompts[0])["input_ids"])
    assert int(batch.response_mask.sum(dim=1).min()) >= 1
    assert len(engine.greedy(prompts)) == 2


def test_vllm_samples_the_updated_policy_after_each_step(vllm_trainer):
    from remix_engine.rollout import HFRolloutEngine

    for _ in range(2):
        metrics = vllm_trainer.train_step()  # lr 1e-2: the policy moves a lot
        assert metrics["rollout_logp_mismatch_max"] < 1e-2  # sampled by the policy the learner scores
    prompts = [f"{a}+{a + 11}=" for a in range(10, 18)]
    hf = HFRolloutEngine(vllm_trainer.policy, vllm_trainer.tokenizer, vllm_trainer.cfg.rollout)
    assert vllm_trainer.engine.greedy(prompts) == hf.greedy(prompts)


def test_vllm_releases_its_memory_while_the_learner_runs(vllm_trainer):
    llm = vllm_trainer.engine.llm
    if not llm.sleep_mode:
        pytest.skip("the installed vLLM has no sleep mode")
    vllm_trainer.engine.sync_weights(vllm_trainer.policy)
    with llm.awake():
        awake_free, total = torch.cuda.mem_get_info()
    asleep_free, _ = torch.cuda.mem_get_info()
    assert asleep_free - awake_free > 0.15 * total  # most of the 0.3 pool is the KV cache


def test_vllm_job_checkpoints_load_with_transformers(vllm_trainer):
    path = vllm_trainer.save_checkpoint()
    reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to("cuda")
    for name, value in vllm_trainer.policy.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
