"""Rollout engines: sample groups of responses from the policy, with the log-probs they were drawn with.

`build_engine` builds the one `rollout.backend` names: `HFRolloutEngine` (hf.py, transformers' generate
on the learner's model) or `VLLMRolloutEngine` (vllm.py, a colocated vLLM engine). Both implement the
`RolloutEngine` protocol and share its preamble, stop rule and batch assembly (engine.py).
"""

from remix_engine.rollout.engine import RolloutEngine, finish_response
from remix_engine.rollout.factory import build_engine
from remix_engine.rollout.hf import HFRolloutEngine
from remix_engine.rollout.vllm import (
    RolloutBackendUnavailable,
    VLLMRolloutEngine,
    backend_unavailable_reason,
    check_backend_available,
)

__all__ = [
    "HFRolloutEngine",
    "RolloutBackendUnavailable",
    "RolloutEngine",
    "VLLMRolloutEngine",
    "backend_unavailable_reason",
    "build_engine",
    "check_backend_available",
    "finish_response",
]
