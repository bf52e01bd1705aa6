"""`remix-engine train CONFIG.yaml`: run a ReMix job locally with a progress bar.

Writes metrics.jsonl and events.jsonl to the output folder and checkpoints under
output/checkpoints/. `--resume` continues from the latest checkpoint in that folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from remix_engine.callbacks import NullCallbacks
from remix_engine.config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ReMix reinforcement finetuning engine.")


def read_config(path: Path) -> TrainConfig:
    """Parse YAML/JSON and validate it; errors name the offending field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from exc
    try:
        return TrainConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise typer.BadParameter(f"invalid config {path}: {problems}") from exc


class JsonlLogger(NullCallbacks):
    """TrainerCallbacks writing JSON lines and driving a tqdm bar."""

    def __init__(self, output_dir: Path, total: int, start: int) -> None:
        from tqdm import tqdm

        output_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(output_dir / "metrics.jsonl", "a")
        self._events = open(output_dir / "events.jsonl", "a")
        self._bar = tqdm(total=total, initial=start, desc="train", unit="step")

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:  # noqa: ARG002 - callbacks protocol
        self._metrics.write(json.dumps(metrics) + "\n")
        self._metrics.flush()
        self._bar.set_postfix(
            reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['accuracy']:.3f}", phase=metrics["phase"]
        )
        self._bar.update(1)

    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None:
        self._events.write(json.dumps({"kind": kind, "step": step, "message": message, "payload": payload}) + "\n")
        self._events.flush()
        if kind != "samples":
            self._bar.write(f"[step {step}] {kind}: {message}")

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        self._bar.close()
        self._metrics.close()
        self._events.close()


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML or JSON job config.", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("runs/local"),
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --output.")] = False,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
) -> None:
    """Train one job locally."""
    from remix_engine.distributed import shutdown
    from remix_engine.trainer import Trainer

    cfg = read_config(config)
    trainer = Trainer(cfg, output, device=device)  # under torchrun: one of WORLD_SIZE processes
    if resume and (latest := Trainer.latest_checkpoint(output)) is not None:
        trainer.resume(latest)
    if not trainer.dist.is_main:  # only the main process logs, checkpoints and evaluates
        trainer.train()
        shutdown()
        return
    logger = JsonlLogger(output, cfg.total_steps, trainer.step)
    trainer.callbacks = logger
    try:
        result = trainer.train()
    finally:
        logger.close()
    shutdown()
    before = result.eval_before.get("accuracy", float("nan"))
    after = result.eval_after.get("accuracy", float("nan"))
    typer.echo(
        f"done: step {result.final_step}, greedy accuracy {before:.3f} -> {after:.3f}, "
        f"checkpoint {result.last_checkpoint}"
    )


@app.command("validate")
def validate(config: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Check a config file without running it."""
    cfg = read_config(config)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


if __name__ == "__main__":
    app()
