"""`remix-engine train` runs a job from YAML and writes metrics, events and checkpoints."""

import json

import yaml
from typer.testing import CliRunner

from remix_engine.cli import app
from remix_engine.toy import build_char_tokenizer, build_untrained_model

runner = CliRunner()


def test_train_from_yaml_writes_metrics_and_checkpoint(tmp_path):
    model_dir = tmp_path / "model"
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(model_dir)},
                "data": {"eval_size": 4},
                "rollout": {"prompts_per_step": 4, "group_size": 2, "max_new_tokens": 4},
                "algorithm": {"name": "remix-grpo", "reincarnation_step": 1},
                "total_steps": 2,
                "checkpoint_every": 1,
            }
        )
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    assert [m["phase"] for m in lines] == ["mix", "on-policy"]
    kinds = [json.loads(x)["kind"] for x in (out / "events.jsonl").read_text().splitlines()]
    assert "reincarnated" in kinds
    assert (out / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    assert "greedy accuracy" in result.output

    # --resume after the end continues from step 2 and runs nothing more.
    again = runner.invoke(app, ["train", str(config), "--output", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert "step 2" in again.output


def test_invalid_config_names_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"algorithm": {"off_policy_fraction": 1.5}}))
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code != 0
    assert "algorithm.off_policy_fraction" in result.output


def test_unknown_field_is_rejected(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"algorithm": {"utd": 2}}))
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code != 0
    assert "algorithm.utd" in result.output
