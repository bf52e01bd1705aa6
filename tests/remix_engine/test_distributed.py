"""Data-parallel training: 2 gloo processes reproduce one process; sharding helpers; torchrun argv."""

import copy
import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from remix_engine.checkpoint import load_trainer_state
from remix_engine.config import TrainConfig
from remix_engine.distributed import (
    DistContext,
    Rendezvous,
    RowMap,
    check_shardable,
    shutdown,
    torchrun_argv,
    torchrun_command,
)
from remix_engine.losses import AGG_MODES, agg_denominator, agg_loss
from remix_engine.trainer import Trainer

COMPARED = (
    "loss",
    "reward_mean",
    "accuracy",
    "adv_mean",
    "adv_std",
    "fresh_samples",
    "replayed_samples",
    "replay_buffer_size",
    "fresh_rollouts_total",
    "response_length_fresh",
)


def dp_config(model_path, **algorithm):
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_path},
            "data": {"eval_size": 4},
            "rollout": {"prompts_per_step": 5, "group_size": 2, "max_new_tokens": 6},
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            "algorithm": {
                "off_policy_fraction": 0.4,
                "utd_ratio": 2,
                "reincarnation_step": 5,
                "lambda_start_step": 1,
                "lambda_interval": 1,
                "minibatch_size": 6,
                **algorithm,
            },
            "optim": {"lr": 1e-3},
            "seed": 3,
        }
    )


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_numel(params):
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)


def _rank_trainer(rank, world_size, port, config_json, out_dir):
    """The environment torchrun would set for this process, then the ordinary Trainer."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    return Trainer(TrainConfig.model_validate_json(config_json), out_dir)


def _train_rank(rank, world_size, port, config_json, out_dir, steps):
    """One torchrun-like process: `steps` training steps; rank 0 saves what the test compares."""
    trainer = _rank_trainer(rank, world_size, port, config_json, out_dir)
    metrics = [trainer.train_step() for _ in range(steps)]
    if rank == 0:
        torch.save(
            {
                "metrics": metrics,
                "weights": trainer.policy.state_dict(),
                "critic": None if trainer.critic is None else trainer.critic.state_dict(),
                "buffer": len(trainer.buffer),
                # Parameter elements this process holds in the optimizer and the KL anchor (shards under FSDP).
                "optimized_numel": _local_numel(p for group in trainer.learner.optimizer.param_groups for p in group["params"]),
                "anchor_numel": _local_numel(trainer.ref_model.parameters()),
            },
            os.path.join(out_dir, "rank0.pt"),
        )
    shutdown()


def _checkpoint_rank(rank, world_size, port, config_json, out_dir, resume_from):
    """Two steps then a checkpoint, or (with `resume_from`) a resume and one more step."""
    trainer = _rank_trainer(rank, world_size, port, config_json, out_dir)
    if resume_from:
        trainer.resume(resume_from)
        metrics = trainer.train_step()
        if rank == 0:
            torch.save({"metrics": metrics, "weights": trainer.policy.state_dict()}, os.path.join(out_dir, "rank0.pt"))
    else:
        trainer.train_step()
        trainer.train_step()
        trainer.save_checkpoint()
    shutdown()


def run_two_processes_with_checkpoint(cfg, out_dir, resume_from=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(
        _checkpoint_rank,
        args=(2, _free_port(), cfg.model_dump_json(), str(out_dir), resume_from and str(resume_from)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    return None if resume_from is None else torch.load(out_dir / "rank0.pt", weights_only=False)


def run_two_processes(cfg, tmp_path, steps=2):
    mp.start_processes(
        _train_rank,
        args=(2, _free_port(), cfg.model_dump_json(), str(tmp_path), steps),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    return torch.load(tmp_path / "rank0.pt", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "aggregation", "strategy"),
    [
        ("remix-grpo", "token-mean", "ddp"),
        ("remix-ppo", "seq-mean-token-mean", "ddp"),
        ("remix-grpo", "token-mean", "fsdp"),
        ("remix-ppo", "seq-mean-token-mean", "fsdp"),
    ],
)
def test_two_processes_match_one(random_model_dir, tmp_path, algorithm, aggregation, strategy):
    cfg = dp_config(random_model_dir, name=algorithm, loss_aggregation=aggregation)
    cfg = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"strategy": strategy})})
    single = Trainer(cfg, tmp_path / "single")
    expected = [single.train_step() for _ in range(2)]
    got = run_two_processes(cfg, tmp_path)

    assert [m["replayed_samples"] for m in got["metrics"]] == [0, 4]  # step 2 mixes in replayed groups
    for want, have in zip(expected, got["metrics"], strict=True):
        for key in COMPARED:
            assert have[key] == pytest.approx(want[key], abs=1e-5), key
    for name, value in single.policy.state_dict().items():
        torch.testing.assert_close(got["weights"][name], value, atol=1e-5, rtol=0, msg=name)
    if single.critic is not None:
        for name, value in single.critic.state_dict().items():
            torch.testing.assert_close(got["critic"][name], value, atol=1e-5, rtol=0, msg=name)
    assert got["buffer"] == len(single.buffer)  # every process keeps the whole replay buffer
    whole = sum(p.numel() for p in single.policy.parameters())
    if strategy == "fsdp":  # the optimizer steps this process's half of the weights; the anchor is halved too
        assert whole // 2 <= got["optimized_numel"] < whole * 0.6
        assert whole // 2 <= got["anchor_numel"] < whole * 0.6
    else:
        assert got["optimized_numel"] == got["anchor_numel"] == whole


@pytest.mark.slow
def test_fsdp_checkpoint_holds_the_whole_optimizer_state_and_resumes_under_any_strategy(random_model_dir, tmp_path):
    # Reincarnation at the end of step 2: the checkpoint holds the new anchor, step 3 is on-policy.
    # (Adam keeps its moments: a fresh Adam's first step is +-lr wherever a gradient is float noise.)
    cfg = dp_config(random_model_dir, name="remix-ppo", reincarnation_step=2, reset_optimizer_on_reincarnation=False)
    fsdp = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"strategy": "fsdp"})})
    single = Trainer(cfg, tmp_path / "single")
    single.train_step()
    single.train_step()
    expected_state = copy.deepcopy(single.learner.optimizer.state_dict())  # the next step updates it in place
    expected_critic_state = copy.deepcopy(single.learner.critic_optimizer.state_dict())
    expected_anchor = copy.deepcopy(single.ref_model.state_dict())  # pi_2, after reincarnation
    expected_next = single.train_step()

    run_two_processes_with_checkpoint(fsdp, tmp_path / "sharded")
    saved = Trainer.latest_checkpoint(tmp_path / "sharded")
    state = load_trainer_state(saved)
    for name, value in expected_anchor.items():  # the sharded anchor, gathered whole
        torch.testing.assert_close(state["ref_model"][name], value, atol=1e-5, rtol=0, msg=name)
    for got, want in ((state["optimizer"], expected_state), (state["critic_optimizer"], expected_critic_state)):
        assert got["state"].keys() == want["state"].keys()  # numbered like one process's optimizer
        assert [g["params"] for g in got["param_groups"]] == [g["params"] for g in want["param_groups"]]
        for index, moments in want["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(got["state"][index][key], moments[key], atol=1e-6, rtol=1e-4)

    # The sharded checkpoint resumes in one process and in two FSDP processes to the same next step.
    alone = Trainer(cfg, tmp_path / "alone")
    alone.resume(saved)
    resumed = {"one process": {"metrics": alone.train_step(), "weights": alone.policy.state_dict()}}
    resumed["two fsdp processes"] = run_two_processes_with_checkpoint(fsdp, tmp_path / "again", resume_from=saved)
    for label, run in resumed.items():
        assert run["metrics"]["step"] == 3, label
        for key in COMPARED:  # (per-rank averages like pg_loss are not the single-process values)
            assert run["metrics"][key] == pytest.approx(expected_next[key], abs=1e-5), (label, key)
        for name, value in single.policy.state_dict().items():
            torch.testing.assert_close(run["weights"][name], value, atol=1e-5, rtol=0, msg=f"{label}: {name}")


def test_fsdp_with_lora_is_refused(random_model_dir):
    with pytest.raises(ValueError, match="fsdp.*lora.enabled"):
        TrainConfig.model_validate(
            {
                "model": {"name_or_path": random_model_dir},
                "distributed": {"strategy": "fsdp"},
                "lora": {"enabled": True},
            }
        )


def test_shards_are_contiguous_balanced_and_cover_everything():
    shards = [DistContext(rank=r, world_size=3).shard_range(8) for r in range(3)]
    assert shards == [(0, 3), (3, 6), (6, 8)]
    assert DistContext().shard_range(5) == (0, 5)


def test_row_map_keeps_minibatch_order_and_drops_other_ranks_rows():
    rows = RowMap(torch.tensor([4, 5, 10, 11]), total=12)  # two fresh rows, then two replayed ones
    assert rows.local_rows(torch.tensor([11, 0, 5, 7, 4])).tolist() == [3, 1, 0]
    assert rows.local_rows(torch.tensor([1, 2])).tolist() == []


@pytest.mark.parametrize("mode", AGG_MODES)
def test_denominators_make_shard_losses_add_up_to_the_whole(mode):
    generator = torch.Generator().manual_seed(0)
    loss = torch.randn(6, 5, generator=generator)
    mask = torch.rand(6, 5, generator=generator) > 0.4
    mask[2] = False  # an empty response
    whole = agg_loss(loss, mask, mode)
    parts = [(loss[:2], mask[:2]), (loss[2:], mask[2:])]
    total = sum(agg_denominator(m, mode) for _, m in parts)
    combined = sum(agg_loss(part, m, mode) * agg_denominator(m, mode) / total for part, m in parts)
    torch.testing.assert_close(combined, whole, atol=1e-6, rtol=1e-5)


def test_torchrun_command():
    argv = torchrun_command("/jobs/1/config.yaml", "/jobs/1", 4, master_port=29611)
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--master_addr=127.0.0.1",
        "--master_port=29611",
        "--nproc_per_node=4",
        "-m",
        "remix_engine.cli",
        "train",
        "/jobs/1/config.yaml",
        "--output",
        "/jobs/1",
        "--device",
        "cuda",
        "--resume",
    ]
    single = torchrun_command("c.yaml", "out", 1, resume=False, device="cpu")
    assert single == [
        sys.executable,
        "-m",
        "remix_engine.cli",
        "train",
        "c.yaml",
        "--output",
        "out",
        "--device",
        "cpu",
    ]
    assert "--standalone" in torchrun_command("c.yaml", "out", 2)
    with pytest.raises(ValueError, match="nproc_per_node"):
        torchrun_command("c.yaml", "out", 0)


def test_torchrun_argv_of_a_node_that_joins_a_rendezvous():
    joining = Rendezvous(endpoint="10.0.0.5:29400", run_id="job-attempt-2", num_nodes=3, host=False, join_timeout_s=90)
    argv = torchrun_argv(2, "worker.distributed_entry", ["job", "2"], rendezvous=joining)
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=3",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=10.0.0.5:29400",
        "--rdzv_id=job-attempt-2",
        "--rdzv_conf=is_host=0,join_timeout=90",
        "--max_restarts=0",
        "--nproc_per_node=2",
        "-m",
        "worker.distributed_entry",
        "job",
        "2",
    ]
    hosting = Rendezvous(endpoint="10.0.0.5:29400", run_id="r", num_nodes=2, host=True, local_addr="10.0.0.5")
    hosted = torchrun_argv(1, "m", [], rendezvous=hosting)
    assert "--rdzv_conf=is_host=1,join_timeout=600" in hosted and "--local_addr=10.0.0.5" in hosted
    assert "--standalone" not in hosted


def test_too_few_fresh_groups_for_the_processes_is_refused(random_model_dir):
    cfg = dp_config(random_model_dir)  # 5 prompts per step, 2 of them replayed: 3 fresh
    check_shardable(cfg, 3)
    with pytest.raises(ValueError, match="4 processes need at least as many fresh prompt groups.*only 3"):
        check_shardable(cfg, 4)
    check_shardable(dp_config(random_model_dir, name="grpo"), 5)  # no replay: all 5 are fresh


def test_single_process_has_no_process_group(random_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    trainer = Trainer(dp_config(random_model_dir), tmp_path)
    assert not trainer.dist.enabled and trainer.learner.train_policy is trainer.policy
    assert not torch.distributed.is_initialized()
    json.dumps(trainer.train_step(), default=str)  # metrics stay plain values
