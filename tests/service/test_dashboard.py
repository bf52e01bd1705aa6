"""The web dashboard in headless Chromium against a live API server, Postgres and Redis.

No worker runs: the test claims the job and writes metrics, events, a checkpoint and the outcome
through service.lifecycle (`claim_job` and the attempt's `JobWriter`), exactly as a worker does,
and checks that the open job page picks them up from the SSE stream (chart point counts,
reincarnation marker, sampled completions, usage) and downloads a checkpoint, and that the compare
view overlays two jobs' curves, switching metric and x-axis.
Chromium comes from the distribution (apt-get install chromium); CI installs it, so a missing
browser fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from service_testing import Caller
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.artifacts import checkpoint_key, get_artifact_store
from service.lifecycle import JobWriter
from service.main import create_app
from service.models import JobStatus
from service.settings import Settings

CHROMIUM = os.environ.get("REMIX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path(os.environ.get("REMIX_DASHBOARD_SCREENSHOT", "/tmp/remix-dashboard.png"))
TIMEOUT_MS = 15_000
USAGE_KEYS = ("fresh_rollouts", "generated_tokens", "trained_tokens", "device_seconds")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    """The API (and so the dashboard) served by uvicorn on a free local port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(.ci/run does) or point REMIX_TEST_CHROMIUM at a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the dashboard test needs the `playwright` package: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.js_errors = []  # uncaught errors and console.error calls, checked at the end of a test
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and page.js_errors.append(msg.text))
    yield page
    context.close()


def step_metrics(step: int, *, mix: bool) -> dict[str, Any]:
    """The keys the trainer writes per step (values shaped like a real run)."""
    metrics: dict[str, Any] = {
        "step": step,
        "phase": "mix" if mix else "on-policy",
        "lambda": max(1.0 - 0.2 * step, 0.0),
        "reward_mean": 0.1 * step,
        "accuracy": 0.1 * step,
        "response_length_fresh": 20.0 + step,
        "fresh_samples": 8,
        "replayed_samples": 4 if mix else 0,
        "fresh_rollouts_total": 8 * step,
        "replayed_samples_total": 4 * min(step, 3),
        "kl_ref": 0.01 * step,
        "kl_prev": 0.002 * step,
        "loss": 1.0 / step,
        "step_s": 0.5,
        "gen_tokens_per_s": 800.0,
        "rollout_s": 0.25,
        "learner_tokens_per_s": 1000.0,
        "learner_s": 0.3,
        # each reward function's mean and error rate (math_verify, the config's reward, charts first)
        "reward/math_verify/mean": 0.1 * step,
        "reward/math_verify/error_rate": 0.0,
        "reward/python/mean": 0.05 * step,
        "reward/python/error_rate": 0.25,
    }
    if mix:
        metrics["response_length_replay"] = 18.0 + step
    return metrics


def chart_points(page: Any, title: str) -> int:
    return int(page.get_attribute(f'[data-chart="{title}"]', "data-points") or 0)


def wait_for_points(page: Any, title: str, count: int) -> None:
    chart_has = '([title, count]) => document.querySelector(`[data-chart="${title}"]`)?.dataset.points'
    page.wait_for_function(chart_has + " === String(count)", arg=[title, count])


def write_checkpoint(writer: JobWriter, settings: Settings, step: int, folder: Path) -> None:
    """Upload a small Hugging Face-style folder and register it, as the worker does after a save."""
    (folder / "trainer_state").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "trainer_state" / "optimizer.pt").write_bytes(b"resume-only")
    key = checkpoint_key(writer.job_id, step)
    size = get_artifact_store(settings).put_dir(key, folder)
    writer.add_event("checkpoint", step, f"checkpoint saved at step {step}", {"checkpoint": key})
    writer.register_checkpoint(step, key, size, {"eval_accuracy": 0.5}, kept_steps=set())


def test_dashboard_follows_a_job_live(
    page: Any, base_url: str, settings: Settings, alice: Caller, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # The root redirects to the dashboard, which asks for the API key once.
    page.goto(f"{base_url}/")
    assert page.url == f"{base_url}/dashboard/"
    page.fill("#api-key", alice.key)
    page.click("#login button[type=submit]")

    # Submit a job with the dashboard's form; it appears in the (auto-refreshed) list.
    page.fill("#submit-job input[name=name]", "dashboard-e2e")
    page.fill("#submit-job input[name=total_steps]", "6")
    page.fill("#submit-job textarea[name=metadata]", '{"experiment": "<b>mix</b>", "team": "math"}')
    page.click("#submit-job button[type=submit]")
    row = page.locator("#jobs-table tr", has_text="dashboard-e2e")
    row.wait_for()
    assert "queued" in row.inner_text() and "0 / 6" in row.inner_text()
    # Metadata is listed as key=value tags, as text: a value is never parsed as HTML.
    assert row.locator(".tag").all_inner_texts() == ["experiment=<b>mix</b>", "team=math"]
    assert row.locator("b").count() == 0
    job_id = uuid.UUID(row.get_attribute("data-job-id"))
    page.screenshot(path=str(SCREENSHOT.with_name(SCREENSHOT.stem + "-jobs.png")))
    row.locator("a").click()
    page.wait_for_url(f"**/dashboard/#/jobs/{job_id}")
    page.locator("#events li[data-kind=queued]").wait_for()
    page.locator('#job-metadata .tag[data-key="team"]', has_text="team=math").wait_for()
    assert page.locator("#job-metadata .tag").count() == 2
    assert page.get_attribute('#job-usage [data-usage="fresh_rollouts"]', "data-value") == "0"

    # A worker claims the job (its 'started' event) and reports three mixed-policy steps.
    writer = claim_as_worker(sessions, job_id, worker_id="w-dashboard")
    writer.add_event("evaluation", 0, "greedy accuracy 0.250", {"accuracy": 0.25, "num_prompts": 8})
    for step in (1, 2, 3):
        writer.record_step(step, step_metrics(step, mix=True))
    wait_for_points(page, "Reward", 3)
    assert page.inner_text("#metric-count") == "3"
    assert chart_points(page, "Response length (tokens)") == 3
    assert chart_points(page, "Accuracy") == 4  # steps 1-3 plus the evaluation before training
    # One line per reward function (and its error rate), built from the reward/<name>/* keys.
    assert chart_points(page, "Reward functions") == 3
    assert page.get_attribute('[data-chart="Reward functions"]', "data-series") == (
        "reward/math_verify/mean reward/math_verify/error_rate reward/python/mean reward/python/error_rate"
    )
    assert "python errors" in page.inner_text('[data-chart="Reward functions"]')
    page.locator("#job-status .status-running").wait_for()
    # Usage follows the steps (re-read at most every 2 s): 8 fresh rollouts, 800 tok/s x 0.25 s
    # generated, 1000 tok/s x 0.3 s trained and 0.5 device-seconds per step.
    page.wait_for_function(
        "document.querySelector('[data-usage=fresh_rollouts]')?.dataset.value === '24'", timeout=TIMEOUT_MS
    )
    usage = {key: page.inner_text(f'#job-usage [data-usage="{key}"]') for key in USAGE_KEYS}
    expected = {"fresh_rollouts": "24", "generated_tokens": "600", "trained_tokens": "900", "device_seconds": "1.5 s"}
    assert usage == expected

    # Sampled completions and the reincarnation at step 3.
    samples = [
        {"prompt": "12+30=", "completion": "<b>42</b> \\boxed{42}", "answer": "42", "reward": 1.0},
        {"prompt": "7+8=", "completion": "\\boxed{14}", "answer": "15", "reward": 0.0},
    ]
    writer.add_event("samples", 3, "2 sampled completions", {"samples": samples})
    writer.add_event("reincarnated", 3, "policy reincarnation at step 3", {"step": 3, "dropped_replay_responses": 12})
    page.locator("#reincarnation", has_text="at step 3").wait_for()
    page.locator("#samples li.sample").nth(1).wait_for()
    first_sample = page.locator("#samples li.sample.good")
    assert "<b>42</b> \\boxed{42}" in first_sample.inner_text()  # shown as text, never as HTML
    assert "reward 1" in first_sample.inner_text()
    assert page.locator("#samples b").count() == 0
    # The events log hides the per-step samples events until asked to show them.
    samples_event = page.locator("#events li[data-kind=samples]")
    assert samples_event.count() == 1 and not samples_event.is_visible()
    assert page.locator("#events li[data-kind=reincarnated]").is_visible()
    page.check("#show-sample-events")
    assert samples_event.is_visible() and "2 sampled completions" in samples_event.inner_text()
    page.uncheck("#show-sample-events")
    assert not samples_event.is_visible()
    charts = ("Reward", "Reward functions", "KL terms and λ")
    assert all(page.get_attribute(f'[data-chart="{t}"]', "data-markers") == "1" for t in charts)

    # On-policy steps after the reincarnation extend the charts without a reload.
    for step in (4, 5, 6):
        writer.record_step(step, step_metrics(step, mix=False))
    wait_for_points(page, "Reward", 6)
    assert chart_points(page, "Reward functions") == 6
    assert page.inner_text("#phase") == "on-policy"
    assert chart_points(page, "Response length (tokens)") == 6
    page.wait_for_function("document.querySelector('[data-usage=fresh_rollouts]')?.dataset.value === '48'")
    assert page.get_attribute('#job-usage [data-usage="device_seconds"]', "data-value") == "3"

    # A checkpoint appears with a download button; the download is the tar.gz of the model folder.
    write_checkpoint(writer, settings, 6, tmp_path / "step-000006")
    button = page.locator('#checkpoints button.download[data-step="6"]')
    with page.expect_download() as download_info:
        button.click()
    download = download_info.value
    assert download.suggested_filename == f"{job_id}-step-000006.tar.gz"
    with tarfile.open(download.path(), "r:gz") as archive:
        names = set(archive.getnames())
    assert {"step-000006/config.json", "step-000006/model.safetensors"} <= names
    assert not any("trainer_state" in name for name in names)

    # The job finishes: the stream ends and the header shows the final state.
    writer.finish(JobStatus.succeeded, step=6, summary={"accuracy_after": 0.6}, message="finished")
    page.locator("#job-status .status-succeeded").wait_for()
    page.locator("#stream-state", has_text="stream ended").wait_for()
    page.wait_for_timeout(300)  # let the last chart frame paint before the picture
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.js_errors == []


def submit_job(base_url: str, caller: Caller, name: str, algorithm: str, metadata: dict[str, str]) -> uuid.UUID:
    config = {"total_steps": 4, "algorithm": {"name": algorithm}}
    body = {"name": name, "config": config, "metadata": metadata}
    response = httpx.post(f"{base_url}/v1/jobs", json=body, headers=caller.headers, timeout=10)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def compare_chart(page: Any) -> dict[str, str]:
    return page.eval_on_selector('[data-chart="compare"]', "el => ({...el.dataset})")


def wait_for_compare(page: Any, key: str, value: str) -> dict[str, str]:
    page.wait_for_function(
        "([key, value]) => document.querySelector('[data-chart=compare]')?.dataset[key] === value", arg=[key, value]
    )
    return compare_chart(page)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def test_dashboard_compares_jobs(page: Any, base_url: str, alice: Caller, sessions: sessionmaker[Session]) -> None:
    # A ReMix run and its on-policy baseline, each through four steps; the baseline rewards less,
    # drifts further from the reference, and takes 16 fresh rollouts and 1.5 s a step.
    remix = submit_job(base_url, alice, "remix-run", "remix-grpo", {"pair": "p1", "arm": "remix"})
    baseline = submit_job(base_url, alice, "baseline-run", "grpo", {"pair": "p1", "arm": "baseline"})
    paused = submit_job(base_url, alice, "paused-run", "grpo", {})
    response = httpx.post(f"{base_url}/v1/jobs/{paused}/pause", headers=alice.headers, timeout=10)
    assert response.status_code == 200, response.text
    remix_writer = claim_as_worker(sessions, remix, worker_id="w-remix")
    baseline_writer = claim_as_worker(sessions, baseline, worker_id="w-baseline")
    remix_writer.add_event("evaluation", 0, "greedy accuracy 0.250", {"accuracy": 0.25, "num_prompts": 8})
    for step in (1, 2, 3, 4):
        remix_writer.record_step(step, step_metrics(step, mix=True) | ({"eval_accuracy": 0.75} if step == 4 else {}))
        metrics = step_metrics(step, mix=False) | {
            "reward_mean": 0.05 * step,
            "kl_ref": 0.02 * step,
            "step_s": 1.5,
            "fresh_samples": 16,
            "fresh_rollouts_total": 16 * step,
        }
        baseline_writer.record_step(step, metrics | ({"eval_accuracy": 0.5} if step == 4 else {}))

    page.goto(f"{base_url}/dashboard/")
    page.fill("#api-key", alice.key)
    page.click("#login button[type=submit]")
    page.locator(f'#jobs-table tr[data-job-id="{paused}"] .status-paused').wait_for()
    assert page.is_disabled("#compare-jobs")
    page.check(f'#jobs-table tr[data-job-id="{remix}"] input.pick')
    assert page.is_disabled("#compare-jobs")  # one job is nothing to compare
    page.check(f'#jobs-table tr[data-job-id="{baseline}"] input.pick')
    page.click("#compare-jobs")
    page.wait_for_url("**/dashboard/#/compare?**")

    # The legend names each job with its algorithm, in the colours of the lines.
    chart = wait_for_compare(page, "series", f"{remix} {baseline}")
    legend = page.locator("#compare-legend li")
    assert legend.count() == 2
    assert "remix-run" in legend.nth(0).inner_text() and "remix-grpo" in legend.nth(0).inner_text()
    assert "baseline-run" in legend.nth(1).inner_text() and "grpo" in legend.nth(1).inner_text()
    assert chart["metric"] == "reward_mean" and chart["xLabel"] == "step" and chart["xMax"] == "4"
    assert chart["points"] == "4 4"
    assert floats(chart["last"]) == pytest.approx([0.4, 0.2])

    # The x-axis: the same curves against fresh rollouts, then training time.
    page.select_option("#compare-x", "fresh_rollouts")
    chart = wait_for_compare(page, "x", "fresh_rollouts")
    assert chart["xLabel"] == "fresh rollouts" and chart["xMax"] == "64"  # the baseline's 4 x 16
    assert chart["points"] == "4 4"
    page.select_option("#compare-x", "wall_time")
    chart = wait_for_compare(page, "x", "wall_time")
    assert chart["xLabel"] == "training time (s)" and floats(chart["xMax"]) == pytest.approx([6.0])

    # The metric: KL to the reference, then held-out accuracy (the ReMix run's also before training).
    page.select_option("#compare-metric", "kl_ref")
    chart = wait_for_compare(page, "metric", "kl_ref")
    assert floats(chart["last"]) == pytest.approx([0.04, 0.08]) and chart["points"] == "4 4"
    page.select_option("#compare-metric", "eval_accuracy")
    chart = wait_for_compare(page, "metric", "eval_accuracy")
    assert chart["points"] == "2 1" and floats(chart["last"]) == pytest.approx([0.75, 0.5])
    assert chart["x"] == "wall_time"  # the axis chosen before stays

    # The choice is in the address: a reload draws the same chart.
    assert "metric=eval_accuracy" in page.url and "x=wall_time" in page.url
    page.reload()
    chart = wait_for_compare(page, "metric", "eval_accuracy")
    assert chart["x"] == "wall_time" and chart["points"] == "2 1"
    assert page.input_value("#compare-metric") == "eval_accuracy"
    page.wait_for_timeout(300)  # let the chart paint before the picture
    page.screenshot(path=str(SCREENSHOT.with_name(SCREENSHOT.stem + "-compare.png")), full_page=True)

    # The legend links to each job's page, with its metadata and usage.
    legend.nth(0).locator("a").click()
    page.wait_for_url(f"**/dashboard/#/jobs/{remix}")
    page.locator('#job-metadata .tag[data-key="arm"]', has_text="arm=remix").wait_for()
    page.wait_for_function("document.querySelector('[data-usage=fresh_rollouts]')?.dataset.value === '32'")
    assert page.get_attribute('#job-usage [data-usage="device_seconds"]', "data-value") == "2"
    assert page.js_errors == []


def test_dashboard_rejects_a_wrong_api_key(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/dashboard/")
    page.fill("#api-key", "rmx_not_a_real_key")
    page.click("#login button[type=submit]")
    page.locator("#login .error", has_text="Key not accepted").wait_for()
    assert page.evaluate("sessionStorage.getItem('remix.apiKey')") is None
