"""LoRA: only adapters train, merged checkpoints load in transformers, adapters in peft, exact resume."""

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from remix_engine.config import LoraConfig, TrainConfig
from remix_engine.lora import ADAPTER_DIR
from remix_engine.toy import build_char_tokenizer
from remix_engine.trainer import Trainer


def lora_config(model_path, **algorithm):
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_path},
            "data": {"eval_size": 4},
            "rollout": {"prompts_per_step": 5, "group_size": 2, "max_new_tokens": 6},
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            "algorithm": {
                "reincarnation_step": 5,
                "lambda_start_step": 1,
                "lambda_interval": 1,
                "minibatch_size": 6,
                **algorithm,
            },
            "optim": {"lr": 1e-2},
            "lora": {
                "enabled": True,
                "r": 4,
                "alpha": 8,
                "target_modules": ["q_proj", "v_proj", "down_proj"],
            },
            "total_steps": 3,
            "seed": 7,
        }
    )


def probe_inputs():
    tokenizer = build_char_tokenizer()
    encoded = tokenizer(["12+34=", "7+5="], padding=True, padding_side="left", return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@torch.no_grad()
def logits_of(model):
    return model(**probe_inputs()).logits


def test_only_adapter_weights_change(random_model_dir, tmp_path):
    trainer = Trainer(lora_config(random_model_dir), tmp_path)
    before = {k: v.detach().clone() for k, v in trainer.policy.named_parameters()}
    trainer.train_step()
    metrics = trainer.train_step()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    adapters = {k for k, p in trainer.policy.named_parameters() if p.requires_grad}
    # r=4 adapters on 3 module kinds x 4 layers, A and B each.
    assert len(adapters) == 3 * 4 * 2 and all(".lora_" in k for k in adapters)
    for name, value in trainer.policy.named_parameters():
        changed = not torch.equal(before[name], value)
        assert changed == (name in adapters), name


def test_anchor_is_base_until_reincarnation_then_current_adapters(random_model_dir, tmp_path):
    trainer = Trainer(lora_config(random_model_dir, reincarnation_step=1), tmp_path)
    base = AutoModelForCausalLM.from_pretrained(random_model_dir)
    trainer.train_step()  # step 1 == T: the anchor becomes the trained policy
    assert trainer.reincarnated_at == 1
    anchor = trainer.ref_model.state_dict()
    for name, value in trainer.lora.adapter_state().items():
        assert torch.equal(anchor[name], value)
    fresh = Trainer(lora_config(random_model_dir), tmp_path / "fresh")
    torch.testing.assert_close(logits_of(fresh.ref_model), logits_of(base), atol=1e-6, rtol=0)


def test_merged_checkpoint_and_adapter_reproduce_the_policy(random_model_dir, tmp_path):
    trainer = Trainer(lora_config(random_model_dir), tmp_path)
    trainer.train_step()
    trainer.train_step()
    path = trainer.save_checkpoint()
    expected = logits_of(trainer.policy)

    merged = AutoModelForCausalLM.from_pretrained(path)
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(logits_of(merged), expected, atol=1e-5, rtol=0)

    base = AutoModelForCausalLM.from_pretrained(random_model_dir)
    base_logits = logits_of(base)
    adapted = PeftModel.from_pretrained(base, path / ADAPTER_DIR)
    torch.testing.assert_close(logits_of(adapted), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # training really moved the policy


def test_resume_restores_adapters_and_gives_identical_next_step(random_model_dir, tmp_path):
    cfg = lora_config(random_model_dir)
    straight = Trainer(cfg, tmp_path / "a")
    straight.train_step()
    straight.train_step()
    path = straight.save_checkpoint()
    expected = straight.train_step()

    resumed = Trainer(cfg, tmp_path / "b")
    resumed.resume(path)
    got = resumed.train_step()
    for key in ("loss", "pg_loss", "kl_ref", "kl_prev", "reward_mean", "replayed_samples"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    for name, value in straight.lora.adapter_state().items():
        torch.testing.assert_close(resumed.lora.adapter_state()[name], value, atol=1e-6, rtol=0)


def test_unknown_target_module_is_a_clear_error(random_model_dir, tmp_path):
    cfg = lora_config(random_model_dir).model_copy(
        update={"lora": LoraConfig(enabled=True, target_modules=["query_key_value"])}
    )
    with pytest.raises(ValueError, match="query_key_value"):
        Trainer(cfg, tmp_path)


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"target_modules": ["model.layers.0.q_proj"]}, "plain module names"),
        ({"target_modules": ["os.system('x')"]}, "plain module names"),
        ({"target_modules": ["q_proj", "q_proj"]}, "twice"),
        ({"target_modules": []}, "at least 1"),
        ({"r": 0}, "greater than or equal to 1"),
        ({"dropout": 1.0}, "less than 1"),
    ],
)
def test_lora_config_validation(lora, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate({"lora": {"enabled": True, **lora}})
