"""The chat-template child of remix_engine/chat_format.py: `python -m remix_engine.chat_render_child`.

Reads {"conversations", "template", "variables"} as JSON from stdin and writes {"rendered": [...]} or
{"error": "..."} (the template raised) to stdout, under an address-space limit set here. The parent
kills it past its time budget.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def main() -> None:
    memory = int(os.environ.get("REMIX_RENDER_MEMORY_BYTES", str(2 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from remix_engine.chat_format import render_in_process

    request = json.loads(sys.stdin.buffer.read())
    try:
        rendered = render_in_process(request["conversations"], request["template"], request["variables"])
        reply: dict[str, object] = {"rendered": rendered}
    except MemoryError:
        reply = {"error": "the template ran out of memory"}
    except Exception as error:  # noqa: BLE001 - a template's own error (raise_exception, undefined...)
        reply = {"error": f"{type(error).__name__}: {error}"[:500]}
    sys.stdout.write(json.dumps(reply))


if __name__ == "__main__":
    main()
