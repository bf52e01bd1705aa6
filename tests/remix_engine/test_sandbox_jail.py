"""The OS jail of the python reward attacked as a hostile tenant would, with the Python audit hook
switched off (`audit_hook=False`), so that every escape is stopped below Python: by bubblewrap's
namespaces and mount jail, the seccomp filter, the unprivileged uid and the resource limits."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from remix_engine.sandbox import RewardScores, check_sandbox, python_reward
from remix_engine.sandbox_jail import MODE_ENV, SandboxUnavailable, seccomp_filter_bpf

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _syscall_refused(call: str) -> str:
    """Body that makes a raw syscall through ctypes and fails unless the kernel said EPERM."""
    return LIBC + f"result = {call}\nassert result != -1 or ctypes.get_errno() != 1, os.strerror(ctypes.get_errno())"


# attack id -> (body run in the sandbox; it must raise, and the error must contain this text)
ATTACKS: dict[str, tuple[str, str]] = {
    "subprocess-sh": ("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'id'])", "Operation not permitted"),
    "fork-exec": (
        "import _posixsubprocess, os\n"
        "_posixsubprocess.fork_exec([b'/bin/sh'], [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1,"
        " *os.pipe(), False, False, -1, None, None, None, -1, None, False)",
        "Operation not permitted",
    ),
    "posix-spawn": ("import os, sys\nos.posix_spawn(sys.executable, ['python', '-c', 'pass'], {})", "not permitted"),
    "fork-bomb": ("import os\nwhile True:\n    os.fork()", "Operation not permitted"),
    "setsid-child": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)", "not permitted"),
    "exec-nsenter": ("import os\nos.execv('/usr/bin/nsenter', ['nsenter', '--net=/proc/1/ns/net'])", "No such file"),
    "ctypes-fork": (LIBC + "assert libc.syscall(57) != -1, os.strerror(ctypes.get_errno())", "not permitted"),
    "ptrace": (LIBC + "assert libc.ptrace(0, 0, 0, 0) != -1, os.strerror(ctypes.get_errno())", "not permitted"),
    "unshare-userns": (LIBC + "assert libc.unshare(0x10000000) == 0, os.strerror(ctypes.get_errno())", "not permitted"),
    "setns-net": (
        LIBC + "fd = os.open('/proc/self/ns/net', os.O_RDONLY)\n"
        "assert libc.setns(fd, 0) == 0, os.strerror(ctypes.get_errno())",
        "not permitted",
    ),
    "mount": (
        LIBC + "assert libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0, os.strerror(ctypes.get_errno())",
        "not permitted",
    ),
    "bpf": (_syscall_refused("libc.syscall(321, 0, 0, 0)"), "not permitted"),
    "keyctl": (_syscall_refused("libc.syscall(250, 0, 0, 0)"), "not permitted"),
    "raw-socket": ("import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)", "not permitted"),
    "postgres-5432": ("import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)", "not permitted"),
    "redis-6379": ("import socket\nsocket.create_connection(('127.0.0.1', 6379), timeout=2)", "not permitted"),
    "etc-shadow": ("open('/etc/shadow').read()", "No such file"),
    "root-home": ("import os\nassert os.listdir('/root') != ['.pyenv'] and os.listdir('/root') == [], 0\n"
                  "open('/root/.bash_history').read()", ""),
    # PID 1 is bwrap's reaper: root and unreadable under a root worker, the worker's uid (and readable,
    # with bwrap's clean environment) under an unprivileged one. Either way nothing of the worker's.
    "pid1-environ": (
        "data = open('/proc/1/environ', 'rb').read()\n"
        "if b'REMIX_' not in data and b'postgres' not in data:\n"
        "    raise PermissionError('nothing of the worker in ' + repr(data))",
        "PermissionError",
    ),
    "write-outside-scratch": ("open('/evil', 'w').write('x')", "Read-only file system"),
    "write-runtime": ("import os\nopen(os.path.dirname(os.__file__) + '/evil', 'w').write('x')", "Read-only"),
    "big-file-in-scratch": ("open('/tmp/big', 'wb').write(b'x' * (8 << 20))", "File too large"),
    "allocate-8gb": ("buffer = bytearray(8 << 30)", "MemoryError"),
    "thread-bomb": (
        "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(30,)).start()",
        "can't start new thread",
    ),
}


def _attack_module(attacks: dict[str, tuple[str, str]]) -> str:
    """One reward function that runs the attack named by the completion and raises what stopped it."""
    lines = ["def reward(completion, answer):"]
    for name, (body, _) in attacks.items():
        lines += [f"    if completion == {name!r}:", "        try:"]
        lines += ["            " + line for line in body.splitlines()]
        lines += [
            "        except BaseException as error:",
            "            raise RuntimeError('stopped: ' + type(error).__name__ + ': ' + str(error))",
            "        return 1.0  # the attack went through",
        ]
    lines.append("    return 0.0")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def attack_results() -> dict[str, tuple[float | None, str | None]]:
    names = list(ATTACKS)
    result = python_reward(
        names, [""] * len(names), code=_attack_module(ATTACKS), audit_hook=False, timeout_s=5, memory_mb=2048
    )
    assert result.isolation.startswith("bwrap:") and "audit hook" not in result.isolation, result.isolation
    return {name: (score, error) for name, score, error in zip(names, result, result.errors, strict=True)}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_escape_is_stopped_below_python(attack: str, attack_results) -> None:
    score, error = attack_results[attack]
    assert score is None, f"{attack} went through the jail"
    assert error is not None and error.startswith("RuntimeError: stopped: "), error
    assert ATTACKS[attack][1] in error, error


def _run(body: str, **kwargs) -> RewardScores:
    code = "def reward(completion, answer):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return python_reward(["x"], [""], code=code, audit_hook=False, **kwargs)


def test_the_code_runs_as_nobody_without_capabilities_under_seccomp_in_a_fresh_pid_namespace() -> None:
    result = _run(
        "import os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "assert (os.getuid(), os.geteuid(), os.getgid(), os.getgroups()) == (65534, 65534, 65534, []), os.getuid()\n"
        "assert int(status['CapEff'], 16) == int(status['CapPrm'], 16) == int(status['CapBnd'], 16) == 0, status\n"
        "assert status['NoNewPrivs'].strip() == '1' and status['Seccomp'].strip() == '2', status\n"
        "assert sorted(p for p in os.listdir('/proc') if p.isdigit()) == ['1', '2'], os.listdir('/proc')\n"
        "assert open('/proc/self/net/dev').read().count(':') == 1  # loopback only\n"
        "return 1.0"
    )
    assert list(result) == [1.0], result.errors


def test_the_mount_namespace_shows_only_the_runtime_and_a_scratch_dir(tmp_path: Path) -> None:
    # given secrets on the host: a file in the host's /tmp, one in root's home, the worker's environment
    secret = f"canary-{uuid.uuid4().hex}"
    host_tmp = tmp_path / "other-tenant-dataset.jsonl"
    host_tmp.write_text(secret)
    home_canary = Path.home() / f".remix-canary-{uuid.uuid4().hex[:8]}"
    home_canary.write_text(secret)
    os.environ["REMIX_TEST_SECRET"] = secret
    try:
        # when the code walks every folder it can see and reads every file and every environ in /proc
        result = _run(
            "import os\n"
            "seen, found = 0, []\n"
            "for root, dirs, files in os.walk('/'):\n"
            "    if root == '/':\n"
            "        dirs[:] = [d for d in dirs if d not in ('proc', 'dev')]  # read below, pid by pid\n"
            "    for name in files:\n"
            "        path = os.path.join(root, name)\n"
            "        try:\n"
            "            with open(path, 'rb') as f:\n"
            "                data = f.read(4096)\n"
            "        except OSError:\n"
            "            continue\n"
            "        seen += 1\n"
            f"        if {secret!r}.encode() in data:\n"
            "            found.append(path)\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self']:\n"
            "    try:\n"
            "        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
            "    except OSError:\n"
            "        continue\n"
            f"    if {secret!r}.encode() in data:\n"
            "        found.append(pid)\n"
            f"for path in [{str(host_tmp)!r}, {str(home_canary)!r}, '/proc/{os.getpid()}/environ']:\n"
            "    if os.path.exists(path):\n"
            "        found.append(path)\n"
            "assert not found, found\n"
            "return float(seen)",
            timeout_s=10,
        )
    finally:
        del os.environ["REMIX_TEST_SECRET"]
        home_canary.unlink()
    # then it read many files (the runtime is there) and none held a secret
    assert result.errors == [None], result.errors
    assert result[0] is not None and result[0] > 100


def test_scratch_files_stay_inside_the_sandbox() -> None:
    marker = f"remix-scratch-{uuid.uuid4().hex}"
    result = _run(f"open('/tmp/{marker}', 'w').write('x')\nimport os\nreturn float(os.path.exists('/tmp/{marker}'))")
    assert list(result) == [1.0], result.errors
    assert not Path(f"/tmp/{marker}").exists()
    assert not list(Path("/tmp").glob(f"remix-reward-*/{marker}"))


def _processes_named(comm: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_nothing_outlives_a_sample_killed_by_the_wall_clock() -> None:
    # given code that names its process (visible from the host) and then blocks forever
    name = f"rmx{uuid.uuid4().hex[:12]}"
    result = _run(LIBC + f"libc.prctl(15, {name.encode()!r}, 0, 0, 0)\nimport time\ntime.sleep(3600)", timeout_s=1)
    assert result.errors == ["killed: wall-clock limit of 1s exceeded"]
    # then, once the call has returned, that process (and the jail around it) is gone from the host
    left = {pid: Path(f"/proc/{pid}/status").read_text() for pid in _processes_named(name)}
    assert left == {}


def test_without_bwrap_the_python_reward_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a worker image without bubblewrap
    with pytest.raises(SandboxUnavailable, match=r"`bwrap` is not installed.*REMIX_REWARD_SANDBOX=process"):
        check_sandbox()


def test_the_weaker_process_mode_must_be_chosen_by_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODE_ENV, "process")
    assert check_sandbox().startswith("process: ")
    monkeypatch.setenv(MODE_ENV, "none")
    with pytest.raises(SandboxUnavailable, match="not a sandbox mode"):
        check_sandbox()


def test_the_default_mode_is_the_jail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODE_ENV, raising=False)
    assert check_sandbox().startswith("bwrap: pid/net/mount/ipc/uts namespaces, seccomp filter")
    assert len(seccomp_filter_bpf()) % 8 == 0 and len(seccomp_filter_bpf()) > 8 * 20  # BPF instructions


SYSTEM_PYTHON = Path("/usr/bin/python3")
UNPRIVILEGED_RUN = """
import json, sys
from remix_engine.sandbox import python_reward
request = json.loads(sys.stdin.read())
result = python_reward(request["names"], [""] * len(request["names"]), code=request["code"], audit_hook=False,
                       timeout_s=5, memory_mb=2048)
print(json.dumps({"isolation": result.isolation, "scores": list(result), "errors": result.errors}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists() or not Path("/usr/bin/setpriv").exists(),
    reason="needs root to start a worker as another uid, and a system Python readable by it",
)
def test_an_unprivileged_worker_builds_the_same_jail_in_a_user_namespace() -> None:
    # given a worker process that is not root (uid 65534 here, as a container's `remix` user would be),
    # running a Python installation it can read (the system one; pyseccomp from this environment)
    import json
    import site
    import subprocess

    import remix_engine

    paths = [str(Path(remix_engine.__file__).parents[1]), *site.getsitepackages()]
    completed = subprocess.run(
        ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(SYSTEM_PYTHON), "-c",
         UNPRIVILEGED_RUN],
        input=json.dumps({"names": list(ATTACKS), "code": _attack_module(ATTACKS)}),
        capture_output=True, text=True, timeout=120, cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(paths)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.splitlines()[-1])
    # then the jail is built without root (bwrap's own user namespace) and every attack still fails
    assert report["isolation"].startswith("bwrap: pid/net/mount/ipc/uts namespaces, seccomp filter")
    assert "uid 65534, no capabilities" in report["isolation"]
    for name, score, error in zip(ATTACKS, report["scores"], report["errors"], strict=True):
        assert score is None and error.startswith("RuntimeError: stopped: "), (name, error)
        assert ATTACKS[name][1] in error, (name, error)
