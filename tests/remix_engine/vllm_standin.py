"""A stand-in `vllm` module that behaves like vLLM 0.31 wherever the rollout engine depends on it.

The real engine needs CUDA; with these classes tests/remix_engine/rollout/test_vllm.py runs the vLLM
backend on CPU. They record every call and enforce what the real engine enforces, each rule next to
the vLLM source it follows, so that a CPU test fails where the real engine would break:

- `LLM(...)` and `SamplingParams(...)` take only keywords vLLM's take (anything else is a TypeError)
  and check their values as vLLM does; `SamplingParams` raises temperatures below 0.01 to 0.01.
- `LLM(...)` reseeds Python's, numpy's and torch's global generators, as vLLM's worker does.
- `max_model_len` is derived from the model's positions; asking for more is refused.
- Sleep and wake follow vLLM's executor: `sleep` while asleep, and `wake_up` of a tag that is not
  asleep, do nothing (vLLM only logs a warning); weights woken after a level-2 sleep are garbage until
  they are loaded again.
- `generate` refuses the whole batch when one prompt is empty or has max_model_len tokens or more, and
  stops responses at max_model_len.
- Stop strings (`SamplingParams(stop=...)`) are matched in the detokenized text, as vLLM's detokenizer
  does: the response ends with the token that completes one (finish_reason "stop", stop_reason the
  string), its token ids are kept, and the text keeps the stop string only with
  include_stop_str_in_output. Like vLLM, an engine built with `skip_tokenizer_init` has no detokenizer
  and silently ignores stop strings; without it the engine uses the model's tokenizer (so the model
  path must hold one when a request has stop strings). Where the real engine would hang (memory still asleep) or sample
  from garbage (weights not reloaded), it raises instead, so a test fails rather than hangs or passes.

The sampling itself is fake: tokens and log-probs come from a generator seeded by the request's seed.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

EOS = 2
TINY_MODEL_POSITIONS = 64  # the builtin tiny model's max_position_embeddings (remix_engine/toy.py)

# vllm/sampling_params.py: _MAX_TEMP (the smallest temperature sampled at) and _SAMPLING_EPS.
_MAX_TEMP = 1e-2
_SAMPLING_EPS = 1e-5


class WouldHangError(RuntimeError):
    """The real engine would never return: it queues the requests while its memory is asleep."""


class GarbageWeightsError(RuntimeError):
    """The real engine would sample from uninitialised memory: weights discarded at sleep level 2."""


@dataclass(kw_only=True)
class SamplingParams:
    """vllm/sampling_params.py SamplingParams, the fields the rollout engine sets and a few more.

    The real class is a msgspec.Struct: an unknown keyword is a TypeError, as with this dataclass.
    """

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    requested_temperature: float = field(init=False, default=1.0)  # what the caller asked for (test aid)

    def __post_init__(self) -> None:
        # SamplingParams.__post_init__: a temperature in (0, _MAX_TEMP) is raised to _MAX_TEMP, with a
        # warning only; the caller's object changes.
        self.requested_temperature = self.temperature
        if 0 < self.temperature < _MAX_TEMP:
            self.temperature = _MAX_TEMP
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)
        self.stop_token_ids = [] if self.stop_token_ids is None else list(dict.fromkeys(self.stop_token_ids))
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy: the filters are switched off
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        # SamplingParams._verify_args (VLLMValidationError is a ValueError).
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0 or not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError("presence_penalty and frequency_penalty must be in [-2, 2].")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if not math.isfinite(self.temperature) or not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens must be less than or equal to max_tokens={self.max_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            raise ValueError(f"logprobs must be non-negative or -1, got {self.logprobs}.")
        if not all(isinstance(token, int) for token in self.stop_token_ids):
            raise ValueError("stop_token_ids must contain only integers.")
        if any(not stop_str for stop_str in self.stop):
            raise ValueError("stop cannot contain an empty string.")
        if self.stop and not self.detokenize:
            raise ValueError("stop strings are only supported when detokenize is True.")


def set_random_seed(seed: int) -> None:
    """vllm's set_random_seed (Worker.init_device and Worker.compile_or_warm_up_model call it with the
    engine's seed, vllm/v1/worker/gpu_worker.py): the process's global generators, all of them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class FakeModel:
    """vLLM's in-process torch model, reached as llm_engine.model_executor.driver_worker.model_runner.model."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.loaded: dict[str, torch.Tensor] = {}
        self.garbage = False  # weights memory re-mapped after a level-2 sleep, not loaded since

    def load_weights(self, weights: Any) -> set[str]:
        names = set()
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()
            names.add(name)
        if names >= set(self.loaded):  # every weight is valid again
            self.garbage = False
        self.log.append(("load_weights", len(names)))
        return names


class LLM:
    """vllm/entrypoints/llm.py LLM, in process, with the sleep state of vllm/v1/executor/abstract.py."""

    last: ClassVar[LLM | None] = None
    # The keywords of LLM.__init__ and of the EngineArgs it forwards the rest to
    # (vllm/engine/arg_utils.py, a dataclass: any other keyword is a TypeError).
    ENGINE_ARGS: ClassVar[frozenset[str]] = frozenset(
        {
            "tokenizer",
            "skip_tokenizer_init",
            "trust_remote_code",
            "tensor_parallel_size",
            "dtype",
            "quantization",
            "revision",
            "seed",
            "gpu_memory_utilization",
            "enforce_eager",
            "max_model_len",
            "max_num_seqs",
            "max_num_batched_tokens",
            "distributed_executor_backend",
            "enable_prefix_caching",
            "enable_sleep_mode",
            "logprobs_mode",
            "generation_config",
            "disable_log_stats",
        }
    )
    DTYPES: ClassVar[set[str]] = {"auto", "half", "float16", "bfloat16", "float", "float32"}
    LOGPROBS_MODES: ClassVar[set[str]] = {"raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits"}
    EXECUTORS: ClassVar[set[str | None]] = {None, "ray", "mp", "uni", "external_launcher"}
    LAUNCHER_ENV: ClassVar[tuple[str, ...]] = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - self.ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        self._check_values(kwargs)
        self.kwargs = {"model": model, **kwargs}
        self.log: list = []
        self.model = FakeModel(self.log)
        self.max_model_len = self._max_model_len(model, kwargs.get("max_model_len"))
        runner = SimpleNamespace(model=self.model)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)),
            model_config=SimpleNamespace(max_model_len=self.max_model_len),
        )
        self.sleep_mode = bool(kwargs.get("enable_sleep_mode", False))
        self.sleeping_tags: set[str] = set()
        self.weights_discarded = False  # by a level-2 sleep
        self.requests: list = []  # (prompts, sampling params) of each generate call
        self.responses: list = []  # the token ids each call returned
        # vLLM loads the tokenizer (the model's, unless `tokenizer` names another) unless told not to;
        # without one its detokenizer does nothing and stop strings are ignored. The stand-in loads it
        # when a request first needs it (tests build engines on model paths that hold no files).
        self.has_tokenizer = not kwargs.get("skip_tokenizer_init", False)
        self._tokenizer: Any = None
        seed = kwargs.get("seed", 0)  # EngineArgs.seed defaults to 0
        if seed is not None:
            set_random_seed(seed)
        LLM.last = self

    def _check_values(self, kwargs: dict[str, Any]) -> None:
        if kwargs.get("dtype", "auto") not in self.DTYPES:
            raise ValueError(f"unknown dtype {kwargs['dtype']!r}")
        if kwargs.get("logprobs_mode", "raw_logprobs") not in self.LOGPROBS_MODES:
            raise ValueError(f"unknown logprobs_mode {kwargs['logprobs_mode']!r}")
        executor = kwargs.get("distributed_executor_backend")
        if executor not in self.EXECUTORS:
            raise ValueError(f"unknown distributed_executor_backend {executor!r}")
        if executor == "external_launcher":  # torch.distributed's env:// rendezvous, as under torchrun
            missing = [name for name in self.LAUNCHER_ENV if name not in os.environ]
            if missing:
                raise ValueError(f"the external launcher needs {missing} in the environment")
        if not 0.0 < kwargs.get("gpu_memory_utilization", 0.9) <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")

    @staticmethod
    def _max_model_len(model: str, requested: int | None) -> int:
        """vllm/config/model.py _get_and_verify_max_len: derived from the model's config, never above it."""
        config = Path(model) / "config.json"
        derived = (
            json.loads(config.read_text()).get("max_position_embeddings", TINY_MODEL_POSITIONS)
            if config.is_file()
            else TINY_MODEL_POSITIONS
        )
        if requested is None:
            return derived
        if requested > derived:
            raise ValueError(
                f"User-specified max_model_len ({requested}) is greater than the derived max_model_len ({derived})."
            )
        return requested

    # ----------------------------------------------------------------------------- sleep mode
    def sleep(self, level: int = 1) -> None:
        if not self.sleep_mode:  # without enable_sleep_mode nothing is in the sleep allocator
            raise RuntimeError("sleep() on an engine built without enable_sleep_mode")
        if self.sleeping_tags:  # Executor.sleep: "Executor is already sleeping." and nothing else
            self.log.append(("sleep ignored", level))
            return
        if level not in (1, 2):
            raise ValueError(f"unsupported sleep level {level}")
        # Worker.sleep (vllm/v1/worker/gpu_worker.py): level 1 offloads the weights to CPU memory, level 2
        # discards them (buffers are kept); CuMemAllocator.sleep discards the KV cache at either level.
        self.weights_discarded = level == 2
        self.sleeping_tags = {"weights", "kv_cache"}
        self.log.append(("sleep", level))

    def wake_up(self, tags: list[str] | None = None) -> None:
        # Executor.wake_up (vllm/v1/executor/abstract.py): when not sleeping, or when one of the tags is
        # not asleep, it logs a warning and wakes nothing, not even the tags that are asleep.
        if not self.sleeping_tags or (tags and any(tag not in self.sleeping_tags for tag in tags)):
            self.log.append(("wake_up ignored", tuple(tags or ())))
            return
        woken = set(tags) if tags else set(self.sleeping_tags)
        if "weights" in woken and self.weights_discarded:
            # CuMemAllocator.wake_up maps fresh memory; only offloaded (level-1) data is copied back.
            self.model.garbage = True
            self.weights_discarded = False
        self.sleeping_tags -= woken
        self.log.append(("wake_up", tuple(tags or ())))

    def reset_prefix_cache(self) -> bool:
        self.log.append(("reset_prefix_cache",))
        return True

    def apply_model(self, func: Any) -> list:
        return [func(self.model)]

    # ----------------------------------------------------------------------------- generation
    def generate(
        self, prompts: Any, sampling_params: Any = None, *, use_tqdm: bool = True, lora_request: Any = None
    ) -> list:
        if self.sleeping_tags:
            raise WouldHangError(
                f"generate() while {sorted(self.sleeping_tags)} asleep: the real engine queues the "
                "requests and never returns"
            )
        if self.model.garbage:
            raise GarbageWeightsError(
                "generate() with weights woken after a level-2 sleep and not loaded since: the real engine "
                "samples from uninitialised memory"
            )
        prompts = prompts if isinstance(prompts, list) else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()]
        if len(params) == 1 and len(prompts) > 1:
            params = params * len(prompts)
        if len(params) != len(prompts):  # LLM._validate_and_add_requests
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        ids = [self._prompt_ids(prompt) for prompt in prompts]  # every request is checked before any runs
        self.log.append(("generate", len(prompts)))
        self.requests.append((prompts, params))
        outputs = [self._sample(prompt_ids, p) for prompt_ids, p in zip(ids, params, strict=True)]
        self.responses.append([o.outputs[0].token_ids for o in outputs])
        return outputs

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
            if self.kwargs.get("skip_tokenizer_init"):
                raise ValueError("skip_tokenizer_init is set: prompts must be token ids")
            raise NotImplementedError("the stand-in takes token-id prompts only")
        ids = list(prompt["prompt_token_ids"])
        # InputProcessor._validate_prompt_len (vllm/v1/engine/input_processor.py): the whole call fails.
        if not ids:
            raise ValueError("The decoder prompt cannot be empty")
        if len(ids) > self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of "
                f"{self.max_model_len}."
            )
        if len(ids) == self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(ids)}) plus the number of requested output tokens (at least 1) "
                f"is longer than the maximum model length of {self.max_model_len}."
            )
        return ids

    def _sample(self, prompt_ids: list[int], p: SamplingParams) -> SimpleNamespace:
        rng = random.Random(0 if p.temperature == 0 else p.seed)
        # A request stops at max_model_len tokens, prompt included (vllm/v1/core/sched/utils.py, check_stop).
        room = self.max_model_len - len(prompt_ids)
        wanted = rng.randint(1, p.max_tokens or room)
        tokens = [rng.randint(4, 100) for _ in range(min(wanted, room))]
        if rng.random() < 0.5:  # stopped at EOS, which vLLM returns as the last token
            tokens[-1] = EOS
        stop_at = next((i for i, t in enumerate(tokens) if t in p.stop_token_ids), None)
        if stop_at is not None:  # vLLM stops at the first stop token
            tokens = tokens[: stop_at + 1]
        finish = "stop" if tokens[-1] in p.stop_token_ids else "length"
        stop_reason: Any = tokens[-1] if finish == "stop" else None
        text = ""
        if p.detokenize and self.has_tokenizer and p.stop:  # (the stand-in makes text only to match stops)
            tokens, text, matched = self._detokenize(tokens, p)
            if matched is not None:
                finish, stop_reason = "stop", matched
        logprobs = [{t: SimpleNamespace(logprob=-0.1 * (i + 1), rank=1)} for i, t in enumerate(tokens)]
        sample = SimpleNamespace(
            index=0,
            token_ids=tokens,
            text=text,
            logprobs=logprobs if p.logprobs is not None else None,
            finish_reason=finish,
            stop_reason=stop_reason,
        )
        return SimpleNamespace(prompt_token_ids=prompt_ids, outputs=[sample])

    def _detokenize(self, tokens: list[int], p: SamplingParams) -> tuple[list[int], str, str | None]:
        """vllm/v1/engine/detokenizer.py: text grows token by token (a stop token adds none); after each
        token the stop strings are searched in the text (StopChecker.check_stop_strings) and the first one
        found ends the request there, its text cut before the stop string or, with
        include_stop_str_in_output, just after it."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.kwargs.get("tokenizer") or self.kwargs["model"])
        tokenizer = self._tokenizer
        for end in range(1, len(tokens) + 1):
            if tokens[end - 1] in p.stop_token_ids:
                break
            text = tokenizer.decode(tokens[:end], skip_special_tokens=p.skip_special_tokens)
            found = [(text.find(s), s) for s in p.stop if s in text]
            if found:
                index, stop = min(found)
                cut = index + len(stop) if p.include_stop_str_in_output else index
                return tokens[:end], text[:cut], stop
        kept = [t for t in tokens if t not in p.stop_token_ids]
        text = tokenizer.decode(kept, skip_special_tokens=p.skip_special_tokens)
        return tokens, text, None


class SleeplessLLM(LLM):
    """A vLLM build without sleep mode (LLM has no sleep/wake_up)."""

    sleep = None  # type: ignore[assignment]
    wake_up = None  # type: ignore[assignment]


def record_empty_cache() -> None:
    """Stands in for torch.cuda.empty_cache: recorded in the last engine's log, to check its order."""
    if LLM.last is not None:
        LLM.last.log.append(("empty_cache",))
