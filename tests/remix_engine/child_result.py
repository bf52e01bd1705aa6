"""A child process's result among its log lines: the child prints one line starting with RESULT_MARK
(then JSON), the parent finds that line. vLLM logs to stdout, also after the result is printed, so the
last line of a child's stdout is not its result."""

from __future__ import annotations

import json
from typing import Any

RESULT_MARK = "REMIX_RESULT "


def print_result_line(value: Any) -> str:
    """Python source for the child: print `value` (an expression of its own) as the marked line."""
    return f"print({RESULT_MARK!r} + json.dumps({value}), flush=True)"


def marked_result(stdout: str) -> Any:
    """The JSON of the one marked line of `stdout`; AssertionError (showing the output) otherwise."""
    found = [line[len(RESULT_MARK) :] for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert len(found) == 1, f"expected one {RESULT_MARK.strip()} line in the child's output:\n{stdout[-4000:]}"
    return json.loads(found[0])
