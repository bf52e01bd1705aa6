"""Every file in examples/ is a job that runs.

Each example is validated as it is, then run here for 2 steps on the model of its architecture, with
its sizes shrunk so that it takes seconds on a CPU:

- the model: the stand-in of its family (remix_engine/standins/: Qwen2 for the Qwen and DeepSeek
  examples, Llama for the Llama ones), or the builtin model it names (EXAMPLE_MODELS; a new example
  without an entry fails `test_every_example_has_a_model_to_run_with`);
- the data: server paths such as /data/gsm8k/train.jsonl become small local files of the same layout
  (SERVER_DATASETS: the same columns, nesting and file format);
- sizes: `shrunk()` lowers prompts_per_step, group_size, max_new_tokens, minibatch and eval sizes and
  total_steps, moves T (and the lambda schedule) to step 1 so both phases run, rolls out with `hf` (vLLM
  needs CUDA) and runs one process (a distributed example is also run on two gloo processes under
  torchrun, `test_distributed_examples_run_on_two_processes`). LoRA, the algorithm, dtype, rewards,
  prompt and chat templates are kept.

The first training prompt of each example is rendered with its model's tokenizer and compared with
`apply_chat_template(..., add_generation_prompt=True)` (or the plain prompt for a model without a
template). The expected memory written in the comments of the real-model examples is recomputed with the
pre-flight from the released config.json of the model (tests/model_configs/).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from remix_engine.callbacks import NullCallbacks
from remix_engine.chat_format import conversation
from remix_engine.config import TrainConfig
from remix_engine.data import validate_dataset_bytes
from remix_engine.preflight import GiB, ModelShape, check_fits, estimate_memory
from remix_engine.prompt_template import render_prompt
from remix_engine.standins import FAMILIES, LLAMA3_INSTRUCT, QWEN25_INSTRUCT, R1_DISTILL_QWEN

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
BUILTIN = "builtin"  # the example names a builtin model: it runs with that model

# The model each example runs with here: a stand-in family, or the builtin model the example names.
EXAMPLE_MODELS = {
    "deepseek-r1-distill-1.5b-remix-ppo.yaml": R1_DISTILL_QWEN,
    "qwen-7b-remix-grpo-fsdp.yaml": QWEN25_INSTRUCT,
    "qwen-math-remix-ppo.yaml": QWEN25_INSTRUCT,
    "qwen2.5-instruct-remix-grpo-gsm8k.yaml": QWEN25_INSTRUCT,
    "tiny-chat-remix-grpo.yaml": BUILTIN,
    "tiny-grpo-baseline.yaml": BUILTIN,
    "tiny-remix-grpo.yaml": BUILTIN,
    "tiny-reasoner-remix-grpo.yaml": BUILTIN,
}
# Hub organisations/names and the stand-in family of their architecture.
HUB_FAMILIES = (
    (re.compile(r"^deepseek-ai/DeepSeek-R1-Distill-Qwen-"), R1_DISTILL_QWEN),
    (re.compile(r"^Qwen/Qwen2(\.5)?-"), QWEN25_INSTRUCT),
    (re.compile(r"^meta-llama/(Meta-)?Llama-3"), LLAMA3_INSTRUCT),
)

# The memory each real-model example's comment states: (the model's config.json, overrides of the
# example) in the order the comment gives them; each is checked as "about <GiB> GiB".
EXPECTED_MEMORY: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "deepseek-r1-distill-1.5b-remix-ppo.yaml": [
        ("deepseek-r1-distill-qwen-1.5b", {}),
        ("deepseek-r1-distill-qwen-1.5b", {"distributed": {"strategy": "ddp"}}),
    ],
    "qwen2.5-instruct-remix-grpo-gsm8k.yaml": [
        ("qwen2.5-1.5b-instruct", {}),
        ("qwen2.5-7b-instruct", {}),
        ("qwen2.5-7b-instruct", {"distributed": {"num_processes": 8, "strategy": "fsdp"}}),
    ],
}
GPU_BYTES = 80 * GiB  # REMIX_GPU_MEMORY_GIB's default: what the API checks jobs against

# --------------------------------------------------------------------------------- local datasets

PAIRS = [(3, 4), (12, 5), (20, 22), (7, 8), (31, 9), (14, 14), (50, 25), (6, 60)]
BOXED = "Let's think step by step and output the final answer within \\boxed{}."


def _math_rows() -> list[dict[str, Any]]:
    """MATH / MATH500 / DeepScaleR's own columns: problem, a worked solution with \\boxed{}, answer."""
    return [
        {
            "problem": f"Compute ${a}+{b}$.",
            "solution": f"Adding, ${a}+{b}={a + b}$, so the answer is $\\boxed{{{a + b}}}$.",
            "answer": str(a + b),
            "subject": "Prealgebra",
            "level": 1,
        }
        for a, b in PAIRS
    ]


def _verl_rows() -> list[dict[str, Any]]:
    """verl's preprocessed DeepScaleR parquet: a chat-message prompt and reward_model.ground_truth."""
    return [
        {
            "data_source": "deepscaler",
            "prompt": [{"role": "user", "content": f"Compute ${a}+{b}$. {BOXED}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": "train", "index": i},
        }
        for i, (a, b) in enumerate(PAIRS)
    ]


def _gsm8k_rows() -> list[dict[str, Any]]:
    return [
        {
            "question": f"Weng has {a} apples and buys {b} more. How many apples does Weng have now?",
            "answer": f"Weng has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}",
        }
        for a, b in PAIRS
    ]


# Each server path named by an example -> (rows of its layout, the layout the loader must detect in them).
SERVER_DATASETS: dict[str, tuple[Any, str]] = {
    "/data/deepscaler/train.parquet": (_math_rows, "math"),
    "/data/deepscaler-verl/train.parquet": (_verl_rows, "verl"),
    "/data/math-benchmarks/math.json": (_math_rows, "math"),
    "/data/gsm8k/train.jsonl": (_gsm8k_rows, "gsm8k"),
    "/data/gsm8k/test.jsonl": (_gsm8k_rows, "gsm8k"),
}


def _file_bytes(rows: list[dict[str, Any]], suffix: str) -> bytes:
    if suffix == ".parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        return buffer.getvalue()
    if suffix == ".json":
        return json.dumps(rows).encode()
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def local_dataset(server_path: str, folder: Path) -> Path:
    """A small local file with the layout and format of the dataset at `server_path`."""
    rows, _layout = SERVER_DATASETS[server_path]
    path = folder / server_path.strip("/").replace("/", "__")
    path.write_bytes(_file_bytes(rows(), Path(server_path).suffix))
    return path


def server_paths(raw: dict[str, Any]) -> list[str]:
    """The dataset paths of an example that are not builtin ids."""
    data = raw.get("data", {})
    paths = [data.get("train_path"), data.get("eval_path")]
    paths += [spec["path"] for spec in raw.get("eval_sets", []) if isinstance(spec, dict) and "path" in spec]
    return [p for p in paths if p and not p.startswith("builtin:")]


# ----------------------------------------------------------------------------------------- shrinking


def shrunk(raw: dict[str, Any], model: str | None, data_folder: Path, *, processes: int = 1) -> dict[str, Any]:
    """The example at CPU-test size (see the module docstring); `model` replaces a hub id."""
    cfg = copy.deepcopy(raw)
    if model is not None:
        cfg.setdefault("model", {})["name_or_path"] = model
    data = cfg.setdefault("data", {})
    for key in ("train_path", "eval_path"):
        if data.get(key) and not data[key].startswith("builtin:"):
            data[key] = str(local_dataset(data[key], data_folder))
    data["eval_size"] = min(data.get("eval_size", 200), 4)
    rollout = cfg.setdefault("rollout", {})
    rollout["backend"] = "hf"
    rollout["prompts_per_step"] = min(rollout.get("prompts_per_step", 64), 4)
    rollout["group_size"] = min(rollout.get("group_size", 8), 2)
    rollout["max_new_tokens"] = min(rollout.get("max_new_tokens", 16), 8)
    rollout["generation_batch_size"] = min(rollout.get("generation_batch_size", 512), 8)
    algorithm = cfg.setdefault("algorithm", {})
    algorithm["minibatch_size"] = min(algorithm.get("minibatch_size", 512), 4)
    if algorithm.get("reincarnation_step", 50) is not None:
        algorithm["reincarnation_step"] = min(algorithm.get("reincarnation_step", 50), 1)
    algorithm["lambda_start_step"] = min(algorithm.get("lambda_start_step", 50), 1)
    cfg.setdefault("distributed", {})["num_processes"] = processes
    eval_sets = []
    for spec in cfg.get("eval_sets", []):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        if "path" in spec:
            spec["path"] = str(local_dataset(spec["path"], data_folder))
        spec["size"] = 2
        if spec.get("samples"):
            spec["samples"] = min(spec["samples"], 2)
        eval_sets.append(spec)
    cfg["eval_sets"] = eval_sets
    cfg["eval_samples"] = min(cfg.get("eval_samples", 0), 2)
    cfg["total_steps"] = 2
    cfg["checkpoint_every"] = 2
    cfg["log_completions"] = 2
    return cfg


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.y*ml"))


def read_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def family_of(raw: dict[str, Any]) -> str:
    name = raw.get("model", {}).get("name_or_path", "builtin:")
    if name.startswith("builtin:"):
        return BUILTIN
    for pattern, family in HUB_FAMILIES:
        if pattern.match(name):
            return family
    raise AssertionError(f"no stand-in family known for {name!r}: add it to HUB_FAMILIES")


# -------------------------------------------------------------------------------------- fast checks


def test_every_example_has_a_model_to_run_with() -> None:
    names = {path.name for path in example_paths()}
    assert len(names) >= 7
    missing = sorted(names - EXAMPLE_MODELS.keys())
    assert not missing, f"examples without an entry in EXAMPLE_MODELS (tests/test_examples.py): {missing}"
    assert sorted(EXAMPLE_MODELS.keys() - names) == []
    assert set(EXAMPLE_MODELS.values()) <= {*FAMILIES, BUILTIN}


@pytest.mark.parametrize("name", sorted(EXAMPLE_MODELS))
def test_example_is_a_valid_job_run_with_the_stand_in_of_its_architecture(name: str, tmp_path: Path) -> None:
    raw = read_example(name)
    cfg = TrainConfig.model_validate(raw)
    assert family_of(raw) == EXAMPLE_MODELS[name]
    for path in server_paths(raw):
        assert path in SERVER_DATASETS, f"{name} reads {path}: add a local dataset of its layout to SERVER_DATASETS"
        rows, layout = SERVER_DATASETS[path]
        local = local_dataset(path, tmp_path)
        fields = (cfg.data.prompt_field, cfg.data.answer_field)
        summary = validate_dataset_bytes(local.read_bytes(), local.suffix.lstrip("."), *fields)
        assert summary.detected_format == layout and summary.num_rows == len(rows())
    TrainConfig.model_validate(shrunk(raw, None, tmp_path))


@pytest.mark.parametrize("name", sorted(EXPECTED_MEMORY))
def test_the_memory_in_an_examples_comment_is_what_the_preflight_computes(name: str) -> None:
    raw = read_example(name)
    comment = "\n".join(line for line in (EXAMPLES / name).read_text().splitlines() if line.startswith("#"))
    stated = [float(x) for x in re.findall(r"about ([0-9]+(?:\.[0-9]+)?) GiB", comment)]
    computed = []
    for model, overrides in EXPECTED_MEMORY[name]:
        cfg = copy.deepcopy(raw)
        for section, values in overrides.items():
            cfg.setdefault(section, {}).update(values)
        config = TrainConfig.model_validate(cfg)
        shape = ModelShape.from_dict(json.loads((MODEL_CONFIGS / model / "config.json").read_text()))
        estimate = estimate_memory(config, shape, world_size=config.distributed.num_processes, device_bytes=GPU_BYTES)
        computed.append(estimate.total / GiB)
    assert len(stated) >= len(computed), (stated, computed)
    # written to one decimal
    assert all(abs(a - b) <= 0.05 + 1e-9 for a, b in zip(stated, computed, strict=False)), (stated, computed)
    # and the example as written fits one GPU of the API's default size
    cfg = TrainConfig.model_validate(raw)
    model = EXPECTED_MEMORY[name][0][0]
    shape = ModelShape.from_dict(json.loads((MODEL_CONFIGS / model / "config.json").read_text()))
    check_fits(cfg, GPU_BYTES, shape, world_size=cfg.distributed.num_processes)


def test_the_model_configs_are_those_of_the_released_models() -> None:
    """Parameter counts of the config.json fixtures against the published sizes (1.78B, 1.54B, 7.62B)."""
    counts = {
        name: ModelShape.from_dict(json.loads((MODEL_CONFIGS / name / "config.json").read_text())).num_params
        for name in ("deepseek-r1-distill-qwen-1.5b", "qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct")
    }
    # the pre-flight leaves out the q/k/v biases (a few hundred thousand parameters)
    assert counts["deepseek-r1-distill-qwen-1.5b"] == pytest.approx(1.777e9, rel=1e-3)
    assert counts["qwen2.5-1.5b-instruct"] == pytest.approx(1.544e9, rel=1e-3)
    assert counts["qwen2.5-7b-instruct"] == pytest.approx(7.616e9, rel=1e-3)


# -------------------------------------------------------------------------------------- running them


class Recorder(NullCallbacks):
    """Trainer callbacks keeping steps, events and checkpoints."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.checkpoints: list[Path] = []

    def on_step(self, _step: int, metrics: dict[str, Any]) -> None:
        self.steps.append(metrics)

    def on_event(self, kind: str, step: int, _message: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, step, payload))

    def on_checkpoint(self, _step: int, path: Path, _metrics: dict[str, Any]) -> None:
        self.checkpoints.append(path)

    def should_stop(self) -> bool:
        return False


def _model_for(name: str, request: pytest.FixtureRequest) -> str | None:
    family = EXAMPLE_MODELS[name]
    if family == BUILTIN:
        return None
    from standin_fixtures import standin_for

    return str(standin_for(request, family))


def _expected_first_prompt(cfg: TrainConfig, tokenizer: Any, example: Any) -> str:
    """The first prompt as apply_chat_template lays it out (or the plain text without a template)."""
    prompt = example.prompt if example.messages is not None else render_prompt(cfg.data.prompt_template, example.prompt)
    turns = conversation(example.messages, prompt, system_prompt=cfg.data.system_prompt)
    if cfg.data.chat_template == "none" or not tokenizer.chat_template:
        return "\n\n".join(turn["content"] for turn in turns)
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id:
        text = text.removeprefix(bos)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLE_MODELS))
def test_example_runs_two_steps_on_its_model(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from remix_engine.splits import load_train_eval
    from remix_engine.trainer import Trainer

    raw = read_example(name)
    cfg = TrainConfig.model_validate(shrunk(raw, _model_for(name, request), tmp_path))

    # its first prompt, rendered with its model's tokenizer and chat template
    recorder = Recorder()
    trainer = Trainer(cfg, tmp_path / "run", callbacks=recorder)
    first = load_train_eval(cfg)[0][0]
    assert trainer.train_prompts[0] == _expected_first_prompt(cfg, trainer.tokenizer, first)
    family = EXAMPLE_MODELS[name]
    if family == R1_DISTILL_QWEN:
        assert trainer.train_prompts[0].endswith("<｜Assistant｜><think>\n")
    elif family == QWEN25_INSTRUCT or raw["model"]["name_or_path"] == "builtin:tiny-chat":
        assert trainer.train_prompts[0].startswith("<|im_start|>system\n")
        assert trainer.train_prompts[0].endswith("<|im_start|>assistant\n")
    elif family == LLAMA3_INSTRUCT:
        assert trainer.train_prompts[0].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")

    # and two steps run: metrics, the samples of the rendered prompts, evaluation of every set, a checkpoint
    result = trainer.train()
    assert result.final_step == 2 and not result.stopped
    assert len(recorder.steps) == 2
    samples = [s for kind, _step, payload in recorder.events if kind == "samples" for s in payload["samples"]]
    assert samples and {s["prompt"] for s in samples} <= set(trainer.train_prompts)
    for spec in cfg.eval_sets:
        assert f"eval_{spec.name}/accuracy" in recorder.steps[-1], sorted(recorder.steps[-1])
    assert "accuracy" in result.eval_after
    assert result.last_checkpoint is not None and (result.last_checkpoint / "config.json").is_file()
    if cfg.lora.enabled:
        assert (result.last_checkpoint / "adapter").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(n for n in EXAMPLE_MODELS if read_example(n).get("distributed", {}).get("num_processes", 1) > 1)
)
def test_distributed_examples_run_on_two_processes(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The example's strategy (ddp or fsdp) on two gloo processes under torchrun, through the CLI."""
    from remix_engine.distributed import torchrun_command

    raw = read_example(name)
    cfg = shrunk(raw, _model_for(name, request), tmp_path, processes=2)
    TrainConfig.model_validate(cfg)
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    argv = torchrun_command(config_path, out, 2, resume=False, device="cpu")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    assert (out / "checkpoints" / "step-000002" / "config.json").is_file()
