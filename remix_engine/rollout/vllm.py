"""Rollouts with vLLM, colocated with the learner on the same GPU (`rollout.backend: vllm`).

`VLLMRolloutEngine` implements the `RolloutEngine` protocol of engine.py. Each training process
(each rank of a data-parallel job) owns one in-process vLLM engine on its own GPU
(`distributed_executor_backend="external_launcher"`, tensor parallel size 1), sized by
`rollout.vllm.gpu_memory_utilization`; the learner keeps the rest of the GPU.

- Weights: vLLM loads the base checkpoint once; after every training step the trainer calls
  `sync_weights`, which streams the learner's current weights (merged W + BA with LoRA) into vLLM's
  model in memory (`model.load_weights`, the loader vLLM itself uses for checkpoints) and resets
  the prefix cache, whose keys and values were computed with the old weights.
- Sleep mode (`rollout.vllm.enable_sleep_mode`, when the installed vLLM has `LLM.sleep`): after each
  generation vLLM goes to sleep at level 2 (weights and KV cache released), so the learner has the GPU
  to itself; the next `sync_weights` wakes the weights before loading them, and the next generation
  wakes the KV cache (and syncs first if the weights were released and not reloaded since).
  Sleep mode's allocator maps its memory outside torch's caching allocator, so torch's cache (the
  learner's freed activations, the merged LoRA weights just loaded) is emptied before each wake.
- Sampling: one request per response, each with its own `SamplingParams(seed=...)`, so a response
  depends only on its prompt and seed. vLLM reports the log-prob of each sampled token after
  temperature (`logprobs_mode="processed_logprobs"`; the config allows no top-k/top-p filter), which is
  `rollout_logp`; the trainer recomputes behaviour log-probs with the learner and logs the largest
  difference as `rollout_logp_mismatch_max` (different kernels and, in bfloat16, different rounding).
  Temperatures vLLM would change (below 0.01) or refuse (above 2) are refused (config/rollout.py).
- Context: vLLM refuses a prompt of max_model_len tokens or more, failing the whole batch; prompts are
  left-truncated to the budget that leaves room for the response (context_length.py).
- vLLM's worker reseeds Python's, numpy's and torch's global generators when it starts
  (`set_random_seed`); the trainer draws nothing from them (its own `torch.Generator`s and per-response
  seeds), so starting the engine changes no sampling sequence of the trainer.
- The model's generation_config.json is ignored (`generation_config="vllm"`), like the HF engine
  hides it: no repetition penalty or default top-p that the learner would not know about.
- Stop strings (`rollout.stop`): vLLM matches them in its detokenizer, which it only has with a
  tokenizer: without stop strings the engine runs with `skip_tokenizer_init` (prompts are token ids),
  with them vLLM loads the model's tokenizer and requests detokenize. vLLM only stops generating there;
  where the response ends, its text (the stop string kept) and whether it was truncated
  (finish_reason "length") are decided by engine.finish_response, as for the HF engine.

vLLM is imported only when an engine is built; nothing else in the project needs it. On a worker
without CUDA or without the vllm package, `check_backend_available` refuses the job at start.

Deliberately omitted: tensor parallelism (one GPU per vLLM engine), a separate inference server, and
vLLM's own LoRA adapters (merged weights are loaded instead).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from remix_engine.batch import RolloutBatch, pad_cat
from remix_engine.config import ModelConfig, RolloutConfig, check_vllm_temperature
from remix_engine.context_length import model_position_limit, prompt_budget, vllm_max_model_len
from remix_engine.rollout.engine import assemble_batch, finish_response, prompt_of_each_response, stop_token_ids

log = logging.getLogger(__name__)

NamedWeights = Iterable[tuple[str, torch.Tensor]]
INSTALL_HINT = "pip install 'remix-rft[vllm]', or build the worker image with --build-arg INSTALL_VLLM=true"


class RolloutBackendUnavailable(RuntimeError):
    """The configured rollout backend cannot run in this process (no GPU, or the package is missing)."""


def backend_unavailable_reason(device: torch.device | str) -> str | None:
    """Why `rollout.backend: vllm` cannot run here, or None when it can."""
    device = torch.device(device)
    missing = []
    if device.type != "cuda" or not torch.cuda.is_available():
        missing.append(f"a CUDA GPU (this job runs on {device.type})")
    if importlib.util.find_spec("vllm") is None:
        missing.append(f"the vllm package, which is not installed on this worker ({INSTALL_HINT})")
    if not missing:
        return None
    return f"rollout.backend 'vllm' needs {' and '.join(missing)}; use rollout.backend 'hf' on this worker"


def check_backend_available(cfg: RolloutConfig, device: torch.device | str) -> None:
    """Raise RolloutBackendUnavailable before any weights are loaded if the backend cannot run here."""
    if cfg.backend != "vllm":
        return
    reason = backend_unavailable_reason(device)
    if reason is not None:
        raise RolloutBackendUnavailable(reason)


def _prepare_external_launcher_env() -> None:
    """vLLM's external launcher reads torchrun's variables; a single process gets a world of one."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    # The engine core must live in this process: its model is updated in place from the learner.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


class ColocatedLLM:
    """One vLLM engine in this process, its sleep state, and where its weights come from."""

    def __init__(
        self,
        *,
        source: str,
        model_cfg: ModelConfig,
        rollout_cfg: RolloutConfig,
        weights: Callable[[], NamedWeights],
        max_model_len: int | None,
        seed: int,
    ) -> None:
        _prepare_external_launcher_env()
        from vllm import LLM

        options = rollout_cfg.vllm
        self.sleep_mode = options.enable_sleep_mode and callable(getattr(LLM, "sleep", None))
        if options.enable_sleep_mode and not self.sleep_mode:
            log.warning("the installed vLLM has no sleep mode: its memory stays allocated during learning")
        kwargs: dict[str, Any] = {
            "model": source,
            # Prompts arrive as token ids from the learner's tokenizer and responses are decoded by it;
            # stop tokens are passed explicitly, so vLLM needs no tokenizer of its own, except to match
            # stop strings (its detokenizer does; without a tokenizer it silently ignores them).
            "skip_tokenizer_init": not rollout_cfg.stop,
            "dtype": model_cfg.dtype,
            "trust_remote_code": model_cfg.trust_remote_code,
            "seed": seed,
            "tensor_parallel_size": 1,
            "distributed_executor_backend": "external_launcher",
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "enforce_eager": options.enforce_eager,
            "max_num_seqs": rollout_cfg.generation_batch_size,
            "logprobs_mode": "processed_logprobs",
            "generation_config": "vllm",
            "enable_sleep_mode": self.sleep_mode,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)
        self.weights = weights
        self.weights_awake = True  # vLLM holds weights (initially the base checkpoint's)
        self.kv_awake = True
        self.weights_current = False  # loaded from the learner since they were last released?

    def sync(self) -> None:
        """Copy the learner's current weights into vLLM (waking its weight memory first)."""
        if self.sleep_mode and not self.weights_awake:
            self._wake("weights")
            self.weights_awake = True
        self._load(self.weights())
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self.weights_current = True

    def _load(self, named: NamedWeights) -> None:
        model = self._inner_model()
        if model is not None:
            model.load_weights(named)
            return
        self.llm.apply_model(lambda inner: inner.load_weights(named))

    def _inner_model(self) -> Any:
        """The in-process torch model of vLLM's only worker, when this vLLM exposes it."""
        try:
            return self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError:
            return None

    def _wake(self, tag: str) -> None:
        """Wake one of vLLM's sleeping memory pools ("weights" or "kv_cache")."""
        # Sleep mode's allocator (vllm/device_allocator/cumem.py, CuMemAllocator) maps memory of its own,
        # outside torch's caching allocator: blocks torch still caches (the learner's activations, the
        # merged LoRA weights just loaded) are not free to it until they are handed back to the driver.
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=[tag])

    @contextlib.contextmanager
    def awake(self) -> Iterator[Any]:
        """The engine ready to generate with the learner's weights; asleep again afterwards."""
        if not self.weights_current:
            self.sync()
        if self.sleep_mode and not self.kv_awake:
            self._wake("kv_cache")
            self.kv_awake = True
        try:
            yield self.llm
        finally:
            if self.sleep_mode:
                self.llm.sleep(level=2)  # weights and KV cache released: the learner gets the memory
                self.weights_awake = self.kv_awake = self.weights_current = False


class VLLMRolloutEngine:
    """RolloutEngine on a colocated vLLM engine; `with_config` gives a view (e.g. for evaluation)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        cfg: RolloutConfig,
        *,
        model_cfg: ModelConfig,
        weights: Callable[[], NamedWeights],
        max_prompt_tokens: int | None = None,
        seed: int = 0,
        device: torch.device | str = "cuda",
        llm: ColocatedLLM | None = None,
    ) -> None:
        check_backend_available(cfg, device)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (load_policy sets it to eos when missing)")
        check_vllm_temperature(cfg.temperature, "rollout.temperature")  # also for configs built unvalidated
        self.tokenizer, self.cfg = tokenizer, cfg
        self.max_prompt_tokens = max_prompt_tokens
        self.device = torch.device(device)
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.stop_strings = tuple(cfg.stop)
        position_limit = model_position_limit(getattr(model, "config", None))
        self.max_model_len = vllm_max_model_len(max_prompt_tokens, cfg.max_new_tokens, position_limit)
        budget = prompt_budget(max_prompt_tokens, cfg.max_new_tokens, self.max_model_len)  # raises: no room
        if budget is not None and max_prompt_tokens is not None and budget < max_prompt_tokens:
            log.warning(
                "vLLM context: prompts are left-truncated to %d tokens (max_model_len %d = the model's %d "
                "positions, minus rollout.max_new_tokens %d), not data.max_prompt_tokens %d",
                budget,
                self.max_model_len,
                position_limit,
                cfg.max_new_tokens,
                max_prompt_tokens,
            )
        if llm is None:
            from remix_engine.modeling import resolve_model_source

            llm = ColocatedLLM(
                source=resolve_model_source(model_cfg.name_or_path),
                model_cfg=model_cfg,
                rollout_cfg=cfg,
                weights=weights,
                max_model_len=self.max_model_len,
                seed=seed,
            )
            llm.sync()  # the learner's weights, not the checkpoint's (LoRA merges, resumed jobs)
        self.llm = llm

    def with_config(self, cfg: RolloutConfig) -> VLLMRolloutEngine:
        """A view on the same vLLM engine that samples with other settings (e.g. the eval temperature)."""
        check_vllm_temperature(cfg.temperature, "the evaluation temperature")  # model_copy does not validate
        prompt_budget(self.max_prompt_tokens, cfg.max_new_tokens, self.max_model_len)  # raises: no room
        view = copy.copy(self)
        view.cfg = cfg
        return view

    def sync_weights(self, model: torch.nn.Module) -> None:  # noqa: ARG002 - weights come from `weights`
        """Load the learner's weights into vLLM, in memory (called after every training step)."""
        self.llm.sync()

    # ------------------------------------------------------------------------------------ sampling
    def generate(
        self,
        prompts: list[str],
        answers: list[str],
        prompt_index: list[int],
        *,
        group_size: int,
        seeds: list[int],
        policy_version: int,
        group_id_start: int,
    ) -> RolloutBatch:
        rows = prompt_of_each_response(prompts, answers, prompt_index, group_size, seeds)
        from vllm import SamplingParams

        prompt_ids = self._encode(prompts, self.cfg.max_new_tokens)
        params = [
            SamplingParams(
                n=1,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                top_k=self.cfg.top_k,  # 0: no top-k filter
                min_p=0.0,
                repetition_penalty=1.0,
                presence_penalty=0.0,
                frequency_penalty=0.0,
                max_tokens=self.cfg.max_new_tokens,
                min_tokens=0,
                seed=int(seed),
                logprobs=0,  # the sampled token's log-prob only
                **self._stop_params(),
            )
            for seed in seeds
        ]
        requests = [{"prompt_token_ids": prompt_ids[i]} for i in rows]
        with self.llm.awake() as llm:
            outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
        tokens, logps, texts, truncated = [], [], [], []
        for output in outputs:
            sample = output.outputs[0]
            kept, text, cut_off = self._finish(sample)
            tokens.append(list(sample.token_ids)[:kept])
            logps.append(_sampled_logprobs(sample.token_ids, sample.logprobs)[:kept])
            texts.append(text)
            truncated.append(cut_off)
        prompt_rows = [torch.tensor(prompt_ids[i], dtype=torch.long).view(1, -1) for i in rows]
        response_ids, response_mask = self._responses(tokens)  # (B, Lr)
        width = response_ids.shape[1]
        return assemble_batch(
            prompt_ids=pad_cat(prompt_rows, left=True),  # (B, Lp)
            prompt_mask=pad_cat([torch.ones_like(row, dtype=torch.bool) for row in prompt_rows], left=True),
            response_ids=response_ids,
            response_mask=response_mask,
            rollout_logp=torch.tensor([lp + [0.0] * (width - len(lp)) for lp in logps], dtype=torch.float32),
            completions=texts,
            truncated=torch.tensor(truncated, dtype=torch.bool),
            rows=rows,
            prompts=prompts,
            answers=answers,
            prompt_index=prompt_index,
            seeds=seeds,
            policy_version=policy_version,
            group_id_start=group_id_start,
            pad_token_id=self.tokenizer.pad_token_id,
            device=self.device,
        )

    def greedy(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        from vllm import SamplingParams

        max_tokens = max_new_tokens or self.cfg.max_new_tokens
        params = SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=max_tokens,
            **self._stop_params(),
        )
        requests = [{"prompt_token_ids": ids} for ids in self._encode(prompts, max_tokens)]
        with self.llm.awake() as llm:
            outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
        return [self._finish(output.outputs[0])[1] for output in outputs]

    # ------------------------------------------------------------------------------------ internals
    def _stop_params(self) -> dict[str, Any]:
        """SamplingParams keywords of the stop rules: EOS tokens, and stop strings when there are any
        (matched by vLLM's detokenizer, which needs detokenize; the text keeps the stop string)."""
        params: dict[str, Any] = {"stop_token_ids": self.stop_ids, "detokenize": bool(self.stop_strings)}
        if self.stop_strings:
            params.update(stop=list(self.stop_strings), include_stop_str_in_output=True)
        return params

    def _finish(self, sample: Any) -> tuple[int, str, bool]:
        """(tokens kept, completion text, truncated) of one vLLM completion (engine.finish_response)."""
        return finish_response(
            list(sample.token_ids),
            self.tokenizer,
            self.stop_ids,
            self.stop_strings,
            stopped=getattr(sample, "finish_reason", None) == "stop",
        )

    def _encode(self, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
        """Token ids of each prompt, left-truncated (as the HF engine truncates to max_prompt_tokens) to
        what leaves room in vLLM's context for max_new_tokens more: vLLM refuses a prompt of
        max_model_len tokens or more, and an empty one, failing the whole batch."""
        encoded = self.tokenizer(prompts, padding=False)["input_ids"]
        limit = prompt_budget(self.max_prompt_tokens, max_new_tokens, self.max_model_len)
        kept = [list(ids[-limit:]) if limit is not None else list(ids) for ids in encoded]
        empty = [i for i, ids in enumerate(kept) if not ids]
        if empty:
            raise ValueError(f"prompts {empty[:5]} encode to no tokens; vLLM refuses empty prompts")
        return kept

    def _responses(self, responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lr) right-padded ids and the mask of their tokens (each response already ends at its stop)."""
        width = max((len(r) for r in responses), default=0) or 1
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in responses], dtype=torch.long)
        return ids, torch.arange(width).unsqueeze(0) < torch.tensor([len(r) for r in responses]).unsqueeze(1)


def _sampled_logprobs(token_ids: Any, logprobs: Any) -> list[float]:
    """The log-prob vLLM reports for each sampled token (its entry in that position's logprobs)."""
    if logprobs is None:
        raise RuntimeError("vLLM returned no log-probs; SamplingParams(logprobs=0) should request them")
    out = []
    for token, position in zip(token_ids, logprobs, strict=True):
        value = position[token].logprob
        out.append(float("nan") if value is None or math.isnan(value) else float(value))
    return out
