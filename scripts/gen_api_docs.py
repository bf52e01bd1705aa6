"""Generate docs/api.md, the HTTP API reference, from the service's OpenAPI schema.

    python scripts/gen_api_docs.py           # rewrite docs/api.md
    python scripts/gen_api_docs.py --check   # exit 1 if docs/api.md is out of date

The output is deterministic (schema order, no timestamps) so a test can compare it with the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
API_MD = REPO_ROOT / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")

HEADER = """# HTTP API reference

<!-- Generated from the OpenAPI schema by scripts/gen_api_docs.py; do not edit by hand. -->

**{title}** {version}

{description}

- **Authentication**: every `/v1` endpoint needs `Authorization: Bearer <api key>`. The operator
  makes the first admin key with `remix-service create-key --admin`; admin keys then create tenants
  and their keys over the API (`/v1/tenants`, `remix keys create --tenant NAME`). Each tenant lists,
  rotates and revokes its own keys (`/v1/keys`); a revoked key gets 401 from the next request on
  the API process that revoked it, and on the others at most `REMIX_AUTH_CACHE_SECONDS` (1 s) later.
- **Errors**: `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail`,
  `instance`; validation errors (422) add `errors: [{{field, message}}]`. 503 and 429 come with
  `Retry-After` (seconds).
- **Quotas**: the operator sets each tenant's limits (`PUT /v1/tenants/{{tenant_id}}/quotas`; defaults
  from `REMIX_DEFAULT_*`), a tenant reads its own with `GET /v1/quotas`. Past one, the problem type is
  `urn:remix:problem:quota-exceeded` with members `quota`, `limit` and (where counted) `usage`:
  429 + `Retry-After` for `requests_per_second` (any authenticated request) and `max_queued_jobs`
  (`POST /v1/jobs`), 403 for a spent training budget (`max_generated_tokens`, `max_device_seconds`)
  at `POST /v1/jobs`. A job past `max_running_jobs` is accepted and stays queued until a slot frees.
- **Usage**: `GET /v1/usage?from=&to=` (ISO 8601) and `GET /v1/jobs/{{job_id}}/usage` report fresh
  rollouts, generated and trained tokens and device-seconds, recorded per training step.
- **Idempotency**: send `Idempotency-Key` with `POST /v1/jobs`; repeating the request with the
  same key returns the same job (`Idempotent-Replayed: true`), a different body with it is a 422.
- **Pagination**: the job, dataset and webhook delivery lists return `has_more` and `next_cursor`;
  pass it back as `after`. The tenant, key and webhook lists come whole.
- **Metadata**: a job's `metadata` (up to 16 string pairs) filters the job list with
  `?metadata[key]=value`; several filters must all match.
- **Webhooks**: signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`); see docs/webhooks.md for verifying them.
- **Streaming**: `GET /v1/jobs/{{job_id}}/stream` is Server-Sent Events (`metric`, one event per
  lifecycle kind, then `end`); reconnect with `Last-Event-ID` to resume without duplicates.
- The machine-readable schema is served at `/openapi.json`, interactive docs at `/docs`.
"""


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower()


def type_of(schema: dict[str, Any]) -> str:
    """A short human-readable type: `string (uuid)`, `integer | null`, `array of [Job](#job)`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema or "oneOf" in schema:
        return " \\| ".join(type_of(s) for s in schema.get("anyOf") or schema["oneOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + type_of(schema.get("items", {}))
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def constraints(schema: dict[str, Any]) -> str:
    """Bounds and default of a schema (looking inside `anyOf` alternatives)."""
    parts = []
    for alt in [schema, *(schema.get("anyOf") or [])]:
        for key, label in (
            ("minimum", ">="),
            ("maximum", "<="),
            ("minLength", "min length"),
            ("maxLength", "max length"),
        ):
            if key in alt:
                parts.append(f"{label} {alt[key]}")
    if "default" in schema and schema["default"] not in (None, "", {}, []):
        parts.append(f"default `{schema['default']}`")
    return ", ".join(parts)


def _describe(schema: dict[str, Any], description: str | None) -> str:
    text = description or schema.get("description") or ""
    extra = constraints(schema)
    return _cell(f"{text} ({extra})" if text and extra else text or extra)


def render_parameters(params: list[dict[str, Any]]) -> list[str]:
    lines = ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
    for p in params:
        schema = p.get("schema", {})
        name = schema.get("title", p["name"]) if p["in"] == "header" else p["name"]
        required = "yes" if p.get("required") else "no"
        text = _describe(schema, p.get("description"))
        lines.append(f"| `{name}` | {p['in']} | {type_of(schema)} | {required} | {text} |")
    return lines


def _content_summary(content: dict[str, Any]) -> str:
    parts = []
    for media, body in content.items():
        schema = body.get("schema")
        parts.append(f"`{media}`" + (f" {type_of(schema)}" if schema else ""))
    return "; ".join(parts)


def render_operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("description") or op.get("summary", ""), ""]
    if op.get("parameters"):
        lines += [*render_parameters(op["parameters"]), ""]
    body = op.get("requestBody")
    if body:
        lines += [f"Request body: {_content_summary(body.get('content', {}))}", ""]
    lines += ["| status | response | description |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        content = _content_summary(response.get("content", {})) or "-"
        lines.append(f"| {status} | {content} | {_cell(response.get('description', ''))} |")
    return [*lines, ""]


def render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    if "enum" in schema:
        return [*lines, type_of(schema), ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, prop in schema.get("properties", {}).items():
        needed = "yes" if field in required else "no"
        lines.append(f"| `{field}` | {type_of(prop)} | {needed} | {_describe(prop, None)} |")
    return [*lines, ""]


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, item[m]) for path, item in spec["paths"].items() for m in METHODS if m in item]


def render(spec: dict[str, Any]) -> str:
    """docs/api.md for an OpenAPI document."""
    info = spec["info"]
    out = [HEADER.format(title=info["title"], version=info["version"], description=_cell(info.get("description", "")))]
    operations = _operations(spec)
    out += ["## Endpoints", "", "| method | path | summary |", "|---|---|---|"]
    out += [
        f"| {m.upper()} | `{path}` | {_cell(op.get('description') or op.get('summary', ''))} |"
        for path, m, op in operations
    ]
    out.append("")
    tags = list(dict.fromkeys(op.get("tags", ["other"])[0] for _, _, op in operations))
    for tag in tags:
        out += [f"## {tag.capitalize()}", ""]
        for path, method, op in operations:
            if op.get("tags", ["other"])[0] == tag:
                out += render_operation(path, method, op)
    out += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out += render_schema(name, schema)
    return "\n".join(out).rstrip() + "\n"


def current_spec() -> dict[str, Any]:
    """The OpenAPI document of the service as it is built today."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from service.main import create_app

    spec: dict[str, Any] = create_app().openapi()
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = render(current_spec())
    if args.check:
        if not API_MD.exists() or API_MD.read_text() != text:
            sys.stderr.write(f"{API_MD} is out of date: run python scripts/gen_api_docs.py\n")
            return 1
        return 0
    API_MD.write_text(text)
    sys.stdout.write(f"wrote {API_MD}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
