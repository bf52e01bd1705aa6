"""Memory pre-flight: hand-computed sizes on the tiny Llama's config, and a clear refusal."""

from pathlib import Path

import pytest
import yaml
from transformers import LlamaConfig

from remix_engine.config import TrainConfig
from remix_engine.model_shape import ModelShape
from remix_engine.preflight import GiB, InsufficientMemoryError, check_fits, estimate_memory

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The builtin tiny Llama: vocab 101, hidden 128, MLP 256, 4 layers, 4 heads of 32, tied embeddings.
TINY = LlamaConfig(
    vocab_size=101,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
# embeddings 101*128 = 12,928; per layer q,k,v,o 4*128*128 = 65,536 + gated MLP 3*128*256 = 98,304
# + two norms 256 = 164,096; 4 layers = 656,384; final norm 128.
TINY_PARAMS = 12_928 + 656_384 + 128


def job(**overrides):
    data = {
        "model": {"dtype": "float32"},
        "data": {"max_prompt_tokens": 32},
        "rollout": {"prompts_per_step": 8, "group_size": 4, "max_new_tokens": 16, "generation_batch_size": 8},
        "algorithm": {"name": "remix-grpo", "minibatch_size": 16},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return TrainConfig.model_validate(data)


def test_full_finetuning_breakdown_by_hand():
    estimate = estimate_memory(job(), TINY)
    weights = TINY_PARAMS * 4  # float32: 2,677,760
    assert estimate.breakdown == {
        "policy_weights": weights,
        "policy_copies": 3 * weights,  # anchor, precedent, pi_t snapshot
        "gradients": weights,
        "optimizer_states": 2 * weights,  # AdamW exp_avg, exp_avg_sq
        # 34 B/token/hidden/layer at 16 bit, x2 for float32: 4 layers * 34 * 16 rows * 48 tokens * 128 * 2
        "activations": 26_738_688,
        # 16 rows * (16 + 1) positions * 101 vocab * (4 model-dtype + 3 * 4 float32)
        "logits": 439_552,
        # 8 sequences * 48 tokens * (K and V) 2 * 4 layers * 4 heads * 32 dims * 4 bytes
        "kv_cache": 1_572_864,
        "sampling_buffers": 8 * 101 * 4 * 4,
    }
    resident = 7 * weights
    assert estimate.rollout_bytes == 1_572_864 + 12_928
    assert estimate.learner_bytes == resident + 26_738_688 + 439_552
    assert estimate.total == estimate.learner_bytes  # the learner's working memory is the larger phase


def test_lora_shrinks_copies_gradients_and_optimizer():
    lora = {"enabled": True, "r": 8, "target_modules": ["q_proj", "v_proj"]}
    estimate = estimate_memory(job(lora=lora), TINY)
    adapters = 4 * 2 * 8 * (128 + 128)  # layers * modules * r * (fan_in + fan_out) = 16,384
    b = estimate.breakdown
    assert b["policy_weights"] == TINY_PARAMS * 4
    assert (b["policy_copies"], b["gradients"], b["optimizer_states"]) == (
        3 * adapters * 4,
        adapters * 4,
        2 * adapters * 4,
    )


def test_ppo_adds_a_critic_and_bf16_halves_weights():
    estimate = estimate_memory(job(algorithm={"name": "ppo"}, model={"dtype": "bfloat16"}), TINY)
    # The critic copies the body, embeddings included (the tied LM head adds nothing), and trains it all:
    # weights + gradients + 2 moments, 2 bytes each.
    assert estimate.breakdown["critic"] == TINY_PARAMS * 2 * 4
    untied_config = LlamaConfig(**{**TINY.to_dict(), "tie_word_embeddings": False})
    untied = estimate_memory(job(algorithm={"name": "ppo"}), untied_config)
    assert untied.breakdown["critic"] == TINY_PARAMS * 4 * 4  # the untied LM head is left out of the critic
    assert estimate.breakdown["policy_weights"] == TINY_PARAMS * 2


def test_fsdp_shards_learner_terms_and_ranks_split_minibatches():
    single = estimate_memory(job(distributed={"strategy": "fsdp"}), TINY)
    sharded = estimate_memory(job(distributed={"strategy": "fsdp"}), TINY, world_size=2)
    for key in ("policy_copies", "gradients", "optimizer_states", "activations", "logits"):
        assert sharded.breakdown[key] * 2 == single.breakdown[key], key
    # The full weights stay on every process (rollouts); the learner's half copy comes on top.
    assert sharded.breakdown["policy_weights"] == single.breakdown["policy_weights"]
    assert "sharded_weights" not in single.breakdown
    assert sharded.breakdown["sharded_weights"] * 2 == single.breakdown["policy_weights"]
    ddp = estimate_memory(job(), TINY, world_size=2)
    assert sharded.total < ddp.total  # what FSDP is for: half the gradients and moments
    assert ddp.breakdown["optimizer_states"] == single.breakdown["optimizer_states"]
    assert sharded.breakdown["kv_cache"] == single.breakdown["kv_cache"]  # each rank fills its own batches


def test_fsdp_lets_a_7b_full_finetune_fit_where_ddp_does_not():
    qwen_7b_like = LlamaConfig(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    )
    cfg = TrainConfig.model_validate(yaml.safe_load((EXAMPLES / "qwen-7b-remix-grpo-fsdp.yaml").read_text()))
    assert cfg.distributed.strategy == "fsdp" and cfg.distributed.num_processes == 8
    fits = check_fits(cfg, 80 * GiB, qwen_7b_like, world_size=8, device_bytes=80 * GiB)
    assert fits.total < 80 * GiB
    ddp = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"strategy": "ddp"})})
    with pytest.raises(InsufficientMemoryError, match="optimizer_states|policy_copies"):
        check_fits(ddp, 80 * GiB, qwen_7b_like, world_size=8, device_bytes=80 * GiB)


def test_parameter_count_only_gives_weight_terms():
    estimate = estimate_memory(job(), 1_000_000)
    assert set(estimate.breakdown) == {"policy_weights", "policy_copies", "gradients", "optimizer_states"}
    assert estimate.total == 7 * 4_000_000 and estimate.rollout_bytes == 0
    with pytest.raises(ValueError, match="model config"):
        estimate_memory(job(lora={"enabled": True}), 1_000_000)


def test_seven_billion_model_refused_on_a_small_gpu_with_actionable_message():
    llama_7b = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=32000,
    )
    assert ModelShape.from_config(llama_7b).num_params == 6_738_415_616  # the published Llama-2-7B count
    cfg = job(model={"dtype": "bfloat16"})
    with pytest.raises(InsufficientMemoryError) as info:
        check_fits(cfg, 24 * GiB, llama_7b)
    message = str(info.value)
    assert "24.00 GiB is available" in message
    assert "largest: policy_copies 37.65 GiB" in message  # 3 * 6.74e9 * 2 bytes
    assert "enable LoRA" in message and "minibatch_size" in message
    assert info.value.estimate.total > 24 * GiB
    fits = check_fits(
        cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"enabled": True})}), 80 * GiB, llama_7b
    )
    assert fits.total < 72 * GiB


def test_kv_cache_dominated_refusal_suggests_rollout_knobs():
    cfg = job(
        rollout={
            "generation_batch_size": 512,
            "max_new_tokens": 8192,
            "prompts_per_step": 64,
            "group_size": 8,
        },
        algorithm={"minibatch_size": 1},
        lora={"enabled": True},
    )
    qwen_like = LlamaConfig(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    )
    with pytest.raises(InsufficientMemoryError) as info:
        check_fits(cfg, 16 * GiB, qwen_like)
    message = str(info.value)
    assert "largest: kv_cache" in message
    assert message.index("generation_batch_size (now 512)") < message.index("minibatch_size")


def test_each_process_generates_its_share_of_the_rollouts():
    cfg = job(rollout={"generation_batch_size": 32})  # 8 prompts x 4 responses = 32 rows per step
    one = estimate_memory(cfg, TINY)
    four = estimate_memory(cfg, TINY, world_size=4)
    assert four.breakdown["kv_cache"] * 4 == one.breakdown["kv_cache"]


def test_vllm_pool_replaces_the_kv_cache_and_sleeps_while_the_learner_runs():
    device = 80 * GiB
    asleep = estimate_memory(job(rollout={"backend": "vllm"}), TINY, device_bytes=device)
    assert asleep.breakdown["vllm_pool"] == int(0.3 * device) and "kv_cache" not in asleep.breakdown
    assert asleep.total == asleep.learner_bytes - sum(asleep.breakdown[k] for k in ("activations", "logits")) + int(
        0.3 * device
    )  # resident + max(learner, pool): the pool is the larger phase here
    awake = estimate_memory(
        job(rollout={"backend": "vllm", "vllm": {"enable_sleep_mode": False}}), TINY, device_bytes=device
    )
    assert awake.total == asleep.total + awake.breakdown["activations"] + awake.breakdown["logits"]
    with pytest.raises(InsufficientMemoryError, match=r"lower rollout.vllm.gpu_memory_utilization \(now 0.9\)"):
        check_fits(job(rollout={"backend": "vllm", "vllm": {"gpu_memory_utilization": 0.9}}), GiB, TINY)
