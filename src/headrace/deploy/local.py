"""``--target local``: the bundle installed in a virtual environment of its own, started on a free
loopback port, checked against the serving contract, then switched live (blue/green).

Environments (``env``):

- ``fresh`` (default): ``python -m venv`` and ``pip install --no-deps -r requirements.txt`` then
  ``pip check``, exactly as the Dockerfile does; nothing of this process's environment is visible.
  Kept under ``.headrace/deploy/envs/<hash of requirements.txt>`` and reused by every bundle with
  the same pins (as a container build reuses its cached layer).
- ``inherit``: a new venv (no pip, a fraction of a second) that sees this process's site-packages
  through a ``.pth`` file; every pin of requirements.txt is then checked against what it imports.
  Offline, for the demo and the tests; what it does not prove is that requirements.txt is complete.

The switch: ``.headrace/deploy/local/<model>.json`` names the live slot (version, port, process)
and the standby one (the previous live, still running for an instant rollback). Deploying starts the
new version next to the live one and moves ``live`` only after the contract checks pass; a failed
check stops the new process and leaves the live one as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import HeadraceError, RegistryError, ServiceUnavailable, UsageError
from .bundle import Bundle
from .sagemaker import format_csv

__all__ = [
    "DEFAULT_FRONT_PORT",
    "ENV_MODES",
    "LINK_VARIABLES",
    "ContractReport",
    "LocalState",
    "check_contract",
    "ensure_env",
    "ensure_front",
    "free_port",
    "front_alive",
    "link_env",
    "start_bundle",
    "stop_front",
    "stop_process",
]

log = logging.getLogger("headrace.deploy.local")

ENV_MODES = ("fresh", "inherit")
PING_BUDGET_S = 2.0
STARTUP_TIMEOUT_S = 60.0


# -- environments -------------------------------------------------------------------------------
def _env_key(bundle: Bundle, mode: str) -> str:
    digest = hashlib.sha256()
    digest.update((bundle.path / "requirements.txt").read_bytes())
    digest.update(f"{mode} {sys.version} {sys.prefix if mode == 'inherit' else ''}".encode())
    return f"{mode}-{digest.hexdigest()[:16]}"


def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_env(bundle: Bundle, envs_root: Path, mode: str = "fresh") -> tuple[Path, dict[str, Any]]:
    """The interpreter of an environment holding the bundle's requirements (built on first use)."""
    if mode not in ENV_MODES:
        raise UsageError(f"unknown environment mode {mode!r}", hint=f"use one of {', '.join(ENV_MODES)}")
    env_dir = envs_root / _env_key(bundle, mode)
    python = _bin(env_dir, "python")
    marker = env_dir / ".headrace-complete"
    if marker.is_file():
        return python, {**json.loads(marker.read_text()), "reused": True}
    started = time.perf_counter()
    envs_root.mkdir(parents=True, exist_ok=True)
    try:
        # venv scripts embed their own path: build in place under the final name; only the marker
        # written last makes it count, so a half-built environment is rebuilt next time
        if env_dir.exists():
            shutil.rmtree(env_dir)
        if mode == "fresh":
            venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
            _run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--no-deps",
                    "--no-compile",
                    "--disable-pip-version-check",
                    "--quiet",
                    "-r",
                    str(bundle.path / "requirements.txt"),
                ],
                "install the bundle's requirements",
            )
            _run([str(python), "-m", "pip", "check"], "check the installed requirements")
        else:
            venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
            _inherit(env_dir, python)
        mismatches = _check_pins(python, bundle.info.get("requirements") or [])
        if mismatches:
            raise HeadraceError(
                f"the environment for {bundle.model}@{bundle.version} does not hold the pinned packages: "
                + "; ".join(mismatches[:5]),
                hint="rebuild the bundle in this environment, or use --env fresh",
            )
        facts = {"mode": mode, "path": str(env_dir), "seconds": round(time.perf_counter() - started, 2)}
        marker.write_text(json.dumps(facts))
        log.info("environment %s ready in %.1f s", env_dir.name, facts["seconds"])
        return python, {**facts, "reused": False}
    except BaseException:
        shutil.rmtree(env_dir, ignore_errors=True)
        raise


def _inherit(env_dir: Path, python: Path) -> None:
    """Make this process's installed packages visible to the new venv (a path-only .pth file)."""
    paths = [
        p
        for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
        if Path(p).is_dir()
    ]
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # plain directory lines: the directories join sys.path, their own .pth files (an editable
    # headrace among them) are not run, so the bundle's copy of headrace is the one imported
    Path(target, "_headrace_inherit.pth").write_text("\n".join(sorted(paths)) + "\n")


def _check_pins(python: Path, requirements: list[str]) -> list[str]:
    script = (
        "import json, sys, importlib.metadata as md\n"
        "bad = []\n"
        "for line in json.load(sys.stdin):\n"
        "    name, _, want = line.partition('==')\n"
        "    try:\n"
        "        have = md.version(name)\n"
        "    except md.PackageNotFoundError:\n"
        "        have = None\n"
        "    if have != want:\n"
        "        bad.append(f'{name} {have or \"missing\"} (pinned {want})')\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run(
        [str(python), "-c", script],
        input=json.dumps(requirements),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return [f"the environment's interpreter failed: {proc.stderr.strip()[-200:]}"]
    return list(json.loads(proc.stdout))


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[:400]
        raise HeadraceError(
            f"could not {what} ({tail})", hint="check the package index is reachable (pip config list)"
        )


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Slot:
    """One running version: its process and where it answers."""

    version: int
    port: int
    pid: int
    bundle: str
    python: str
    log: str
    deployment_id: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "url": self.url}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Slot:
        return cls(**{k: v for k, v in doc.items() if k != "url"})


def alive(slot: Slot) -> bool:
    """The slot's process still runs and is ours (a recycled pid is not)."""
    try:
        cmdline = Path(f"/proc/{slot.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        try:
            os.kill(slot.pid, 0)
        except OSError:
            return False
        return True
    return slot.bundle in cmdline


def start_bundle(
    bundle: Bundle,
    python: Path,
    log_dir: Path,
    port: int | None = None,
    *,
    home: dict[str, str] | None = None,
) -> Slot:
    """Start the bundle's ``serve`` under ``python`` on a loopback port, detached from this process.

    ``home``: the ``HEADRACE_*`` variables that make it report to the project (``link_env``)."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{bundle.model}-v{bundle.version}-{port}.log"
    drop = ("PYTHONPATH", "PYTHONHOME", "HEADRACE_MODEL_DIR", *LINK_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(home or {})
    argv = [
        str(python),
        str(bundle.path / "serve"),
        "--model-dir",
        str(bundle.model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # posix_spawn rather than Popen: the server outlives this command by design, and a Popen object
    # dropped while its process runs warns; the pid is all the switch keeps (stop_process reaps it)
    pid = os.posix_spawn(
        str(python),
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    return Slot(bundle.version, port, pid, str(bundle.path), str(python), str(log_path))


LINK_VARIABLES = (
    "HEADRACE_METADATA_URL",
    "HEADRACE_STORE_URL",
    "HEADRACE_ARTIFACTS_URL",
    "HEADRACE_ALIAS",
    "HEADRACE_TARGET",
    "HEADRACE_ENDPOINT",
    "HEADRACE_RELOAD_SECONDS",
    "HEADRACE_RECORD_DEPLOYMENT",
)


def link_env(
    metadata: str, store: str, artifacts: str, *, alias: str, target: str = "local"
) -> dict[str, str]:
    """The environment that makes a bundle report home (see ``headrace.deploy.runtime``)."""
    return {
        "HEADRACE_METADATA_URL": metadata,
        "HEADRACE_STORE_URL": store,
        "HEADRACE_ARTIFACTS_URL": artifacts,
        "HEADRACE_ALIAS": alias,
        "HEADRACE_TARGET": target,
        "HEADRACE_RECORD_DEPLOYMENT": "0",  # 'headrace deploy' records the local slots itself
    }


def stop_process(slot: Slot, timeout: float = 10.0) -> bool:
    """SIGTERM the slot's process (by its id), then SIGKILL if it lingers; True if it was running."""
    if not alive(slot):
        return False
    try:
        os.kill(slot.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _status = os.waitpid(slot.pid, os.WNOHANG)
            if finished:
                return True
        except ChildProcessError:  # not our child (started by an earlier command): poll instead
            if not alive(slot):
                return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(slot.pid, signal.SIGKILL)
    return True


def wait_ready(slot: Slot, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Seconds until ``GET /ping`` first answers 200; ServiceUnavailable if the process dies or
    the time runs out."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=PING_BUDGET_S) as client:
        while time.monotonic() < deadline:
            if not alive(slot):
                raise ServiceUnavailable(
                    f"the bundle's server for v{slot.version} exited while starting",
                    hint=f"see its log: {slot.log}",
                )
            try:
                if client.get(f"{slot.url}/ping").status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise ServiceUnavailable(
        f"the bundle's server for v{slot.version} did not answer /ping within {timeout:.0f} s",
        hint=f"see its log: {slot.log}",
    )


# -- the contract -------------------------------------------------------------------------------
@dataclass
class ContractReport:
    url: str
    checks: list[dict[str, Any]]
    answer: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c['name']}: {c['detail']}" for c in self.checks if not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "checks": self.checks, "answer": self.answer}


def check_contract(url: str, example: list[dict[str, Any]], columns: list[str]) -> ContractReport:
    """The serving contract over HTTP: health routes, /ping within 2 s, /invocations in JSON and CSV
    (with and without a header row) giving the same answer, and CSV out on request."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, seconds: float | None = None) -> None:
        checks.append(
            {
                "name": name,
                "ok": bool(ok),
                "detail": detail,
                "seconds": None if seconds is None else round(seconds, 4),
            }
        )

    answer: dict[str, Any] | None = None
    with httpx.Client(base_url=url, timeout=10.0) as client:
        try:
            started = time.perf_counter()
            ping = client.get("/ping", timeout=PING_BUDGET_S)
            took = time.perf_counter() - started
            check(
                "ping",
                ping.status_code == 200 and took <= PING_BUDGET_S,
                f"HTTP {ping.status_code} in {took * 1000:.0f} ms",
                took,
            )
        except httpx.HTTPError as exc:
            check("ping", False, f"no answer within {PING_BUDGET_S} s ({type(exc).__name__})")
        for route in ("/health/live", "/health/ready"):
            try:
                status = client.get(route).status_code
                check(route, status == 200, f"HTTP {status}")
            except httpx.HTTPError as exc:
                check(route, False, type(exc).__name__)
        if not example:
            check("invocations", False, "the bundle has no input example to send")
            return ContractReport(url, checks)
        try:
            started = time.perf_counter()
            reply = client.post("/invocations", json={"records": example})
            took = time.perf_counter() - started
            answer = reply.json() if reply.status_code == 200 else None
            count = len((answer or {}).get("predictions") or [])
            check(
                "invocations json",
                count == len(example),
                f"HTTP {reply.status_code}, {count} predictions",
                took,
            )
            header = ",".join(columns)
            rows = [",".join(_csv_cell(r.get(c)) for c in columns) for r in example]
            for name, body in (
                ("invocations csv (header)", "\n".join([header, *rows])),
                ("invocations csv (signature order)", "\n".join(rows)),
            ):
                reply = client.post(
                    "/invocations", content=body.encode(), headers={"content-type": "text/csv"}
                )
                same = (
                    reply.status_code == 200
                    and answer is not None
                    and reply.json().get("predictions") == answer.get("predictions")
                )
                check(
                    name,
                    same,
                    f"HTTP {reply.status_code}, {'same' if same else 'different'} predictions as JSON",
                )
            reply = client.post("/invocations", json={"records": example}, headers={"accept": "text/csv"})
            expected = format_csv(answer or {})
            check(
                "invocations accept csv",
                reply.status_code == 200 and reply.text == expected,
                f"HTTP {reply.status_code}, {len(reply.text.splitlines())} lines",
            )
        except (httpx.HTTPError, ValueError) as exc:
            check("invocations", False, f"{type(exc).__name__}: {exc}")
    return ContractReport(url, checks, answer)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',"\n') else text


# -- the switch ---------------------------------------------------------------------------------
class LocalState:
    """The local switch: which slot is live and which stands by, in one JSON file per model."""

    def __init__(self, root: Path, model: str) -> None:
        self.path = root / f"{model}.json"
        self.root = root

    def read(self) -> dict[str, Slot | None]:
        if not self.path.is_file():
            return {"live": None, "standby": None}
        doc = json.loads(self.path.read_text())
        return {k: Slot.from_dict(doc[k]) if doc.get(k) else None for k in ("live", "standby")}

    def write(self, live: Slot | None, standby: Slot | None) -> None:
        """The switch: one atomic rename; the front sends the next request to the new live slot."""
        doc = {"live": live.to_dict() if live else None, "standby": standby.to_dict() if standby else None}
        doc["front"] = self.front()
        self._replace(doc)

    def front(self) -> dict[str, Any] | None:
        """The front's port and process (``{"port", "pid"}``), or None."""
        if not self.path.is_file():
            return None
        front = json.loads(self.path.read_text()).get("front")
        return dict(front) if front else None

    def set_front(self, front: dict[str, Any] | None) -> None:
        doc = json.loads(self.path.read_text()) if self.path.is_file() else {"live": None, "standby": None}
        doc["front"] = front
        self._replace(doc)

    def _replace(self, doc: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.path)


# -- the front: one address for every version ---------------------------------------------------------
DEFAULT_FRONT_PORT = 8700


def front_alive(front: dict[str, Any] | None) -> bool:
    if not front:
        return False
    try:
        os.kill(int(front["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    cmdline = Path(f"/proc/{int(front['pid'])}/cmdline")
    return not cmdline.exists() or b"headrace.deploy.front" in cmdline.read_bytes()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_front(state: LocalState, log_dir: Path, port: int | None = None) -> dict[str, Any]:
    """The front of this model's local deployment, started on ``port`` (else the port it had, else
    8700, else a free one) if it is not running; returns ``{"port", "pid", "url"}``."""
    current = state.front()
    if front_alive(current) and current is not None and (port is None or int(current["port"]) == port):
        return {**current, "url": f"http://127.0.0.1:{int(current['port'])}"}
    if current is not None and front_alive(current):
        _signal_stop(int(current["pid"]))
    wanted = port or (int(current["port"]) if current else DEFAULT_FRONT_PORT)
    if not _port_free(wanted):
        if port is not None:
            raise UsageError(f"port {port} is taken", hint="pass another --port for the local front")
        wanted = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"front-{state.path.stem}.log"
    argv = [sys.executable, "-m", "headrace.deploy.front", "--state", str(state.path), "--port", str(wanted)]
    pid = os.posix_spawn(
        sys.executable,
        argv,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", wanted), timeout=0.2):
            break
        exited = 0
        with contextlib.suppress(ChildProcessError):
            exited, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it died (no zombie left behind)
        if exited:
            raise ServiceUnavailable(
                f"the local front did not start on port {wanted}", hint=f"see its log {log_path}"
            )
        time.sleep(0.05)
    else:
        _signal_stop(pid)
        raise ServiceUnavailable(
            f"the local front did not open port {wanted}", hint=f"see its log {log_path}"
        )
    front = {"port": wanted, "pid": pid}
    state.set_front(front)
    return {**front, "url": f"http://127.0.0.1:{wanted}"}


def stop_front(state: LocalState) -> bool:
    front = state.front()
    if not front_alive(front) or front is None:
        return False
    _signal_stop(int(front["pid"]))
    state.set_front(None)
    return True


def _signal_stop(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def no_previous(model: str) -> RegistryError:
    return RegistryError(
        f"model {model!r} has no previous local deployment to roll back to",
        hint=f"deploy another version first with 'headrace deploy {model}@VERSION --target local'",
    )
