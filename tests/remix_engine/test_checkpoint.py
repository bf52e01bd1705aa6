"""Checkpoints are atomic, listed in order, pruned, and never half-written."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from remix_engine import checkpoint as ckpt


class _Tok:
    def save_pretrained(self, path):
        (path / "tokenizer.json").write_text("{}")


def tiny_model():
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg)


def test_save_load_latest_and_prune(tmp_path):
    model = tiny_model()
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, model, _Tok(), {"step": step, "x": torch.ones(2)}, {"note": "n"})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000004", "step-000006"]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step-000006"
    assert ckpt.load_trainer_state(latest)["step"] == 6
    assert ckpt.read_meta(latest)["schema_version"] == ckpt.SCHEMA_VERSION
    assert (latest / "model.safetensors").is_file() and (latest / "config.json").is_file()
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step-000002"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path):
    model = tiny_model()
    good = ckpt.save_checkpoint(tmp_path, 1, model, _Tok(), {"step": 1}, {})

    class Exploding(_Tok):
        def save_pretrained(self, path):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        ckpt.save_checkpoint(tmp_path, 2, model, Exploding(), {"step": 2}, {})
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert ckpt.load_trainer_state(good)["step"] == 1
    assert not list(tmp_path.glob(".tmp-*"))
    assert not (tmp_path / "step-000002").exists()


def test_incomplete_folder_is_ignored(tmp_path):
    (tmp_path / "step-000009").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        ckpt.load_trainer_state(tmp_path / "step-000009")


def test_best_k_by_eval_score_survive_pruning(tmp_path):
    model = tiny_model()
    scores = {1: 0.2, 2: 0.9, 3: 0.1, 4: 0.5, 5: None, 6: 0.3}
    for step, score in scores.items():
        ckpt.save_checkpoint(tmp_path, step, model, _Tok(), {"step": step}, {"eval_score": score})
    deleted = ckpt.prune_checkpoints(tmp_path, keep=1, keep_best=2)
    assert sorted(p.name for p in deleted) == ["step-000001", "step-000003", "step-000005"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000004", "step-000006"]
