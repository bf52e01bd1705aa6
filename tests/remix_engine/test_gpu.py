"""The HF backend on CUDA in bfloat16: full and LoRA training steps, checkpoints, the memory pre-flight.

Marked `gpu`; skipped on machines without CUDA (run them with `pytest -m gpu` on a GPU host).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from remix_engine.config import TrainConfig
from remix_engine.preflight import InsufficientMemoryError
from remix_engine.toy import build_char_tokenizer, build_untrained_model
from remix_engine.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("random-llama")
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


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
    fresh = trainer._rollout(1, 4)
    trainer._prepare_fresh(fresh)
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


def test_preflight_refuses_a_job_larger_than_free_memory(random_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (1024**2, 80 * 1024**3))
    with pytest.raises(InsufficientMemoryError, match="is available"):
        Trainer(gpu_config(random_model_dir), tmp_path, device="cuda")
