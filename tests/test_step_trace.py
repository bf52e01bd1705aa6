"""scripts/step_trace.py: two traces compare equal only when every shared metric and the weights match."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "step_trace.py"


def load_script():
    spec = importlib.util.spec_from_file_location("step_trace", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_differences_name_every_mismatch_and_ignore_metrics_only_one_trace_has():
    step_trace = load_script()
    a = {"grpo": {"weight_sum": 1.0, "steps": [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.4, "accuracy": 0.5}]}}
    first, second = {"loss": 0.5, "accuracy": 0.25, "new": 1}, {"loss": 0.4, "accuracy": 0.5}
    same_plus_new_metric = {"grpo": {"weight_sum": 1.0, "steps": [first, second]}}
    assert step_trace.differences(a, same_plus_new_metric) == []
    changed = {"grpo": {"weight_sum": 1.5, "steps": [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.41, "accuracy": 0.5}]}}
    assert step_trace.differences(a, changed) == [
        "grpo: final weights differ (1.0 vs 1.5)",
        "grpo step 2 loss: 0.4 vs 0.41",
    ]
    assert step_trace.differences(a, {}) == ["grpo: only in one trace"]
