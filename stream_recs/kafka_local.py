"""The embedded single-node Apache Kafka (KRaft) that the demo, the tests and CI run against.

The broker jars are resolved by Maven from ``deploy/kafka/pom.xml`` into a cache outside the
repository; the broker runs as ``java -cp <jars> kafka.Kafka server.properties`` with a config
written from ``deploy/kafka/server.properties.in``. Its state directory holds ``data/`` (formatted
once, never reformatted, so restarts keep every topic), ``logs/server.log``, the written config and
``broker.json`` (pid and ports), which is how ``status``/``down`` find a broker started by another
process.

An ``extra_listener`` (see ``ExtraListener``) adds a second client listener on a port of its own,
e.g. one with authentication for testing the clients' security settings (the tests' SASL
listener); the plain listener stays for the broker itself.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Protocol

from stream_recs.devkit import free_port

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
DEFAULT_PORT = 9092
STARTUP_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 30.0


class KafkaLocalError(RuntimeError):
    """The local broker could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker."""

    pid: int
    port: int
    controller_port: int
    version: str
    extra_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def extra_bootstrap(self) -> str | None:
        """The extra listener's address, when the broker has one."""
        return f"127.0.0.1:{self.extra_port}" if self.extra_port else None


class ExtraListener(Protocol):
    """A client listener besides the plain one: its name (as in ``listeners=``), its security
    protocol, the server.properties lines it needs, and extra ``StorageTool format`` arguments
    (e.g. credentials that must exist before the broker starts)."""

    name: str
    protocol: str

    def properties(self) -> str: ...

    def format_args(self) -> list[str]: ...


def pinned_version(pom: Path = DEPLOY_DIR / "pom.xml") -> str:
    """The Kafka version pinned in the pom (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise KafkaLocalError(f"{pom} pins no <kafka.version>")
    return match.group(1).strip()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def metadata_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a Kafka metadata request to ``bootstrap`` is answered."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a plain TCP probe first: a closed port fails fast and quietly
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` of one state directory across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalKafka:
    """One local broker: its jars (``cache_dir``) and its state (``state_dir``)."""

    def __init__(
        self,
        state_dir: Path,
        cache_dir: Path,
        port: int = DEFAULT_PORT,
        heap: str = "512m",
        overrides: Mapping[str, str] | None = None,
        extra_listener: ExtraListener | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.version = pinned_version()
        self.libs_dir = Path(cache_dir) / f"kafka-{self.version}" / "libs"
        self.preferred_port = port
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.extra_listener = extra_listener

    # --- paths ----------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def _info_file(self) -> Path:
        return self.state_dir / "broker.json"

    @property
    def _config_file(self) -> Path:
        return self.state_dir / "server.properties"

    # --- jars -----------------------------------------------------------------------------
    def classpath(self) -> str:
        """Resolve the broker jars with Maven once (cached), then return the ``-cp`` value."""
        marker = self.libs_dir / ".complete"
        if not marker.exists():
            with _locked(self.libs_dir.parent / ".lock"):
                if not marker.exists():
                    self._resolve_jars()
                    marker.touch()
        return str(self.libs_dir / "*")

    def _resolve_jars(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaLocalError("Maven (mvn) is needed to resolve the Kafka broker jars: install maven")
        if self.libs_dir.exists():
            shutil.rmtree(self.libs_dir)
        cmd = [
            mvn, "-q", "-B", "-f", str(DEPLOY_DIR / "pom.xml"), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={self.libs_dir}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            tail = (done.stdout + done.stderr)[-2000:]
            raise KafkaLocalError(f"Maven could not resolve the Kafka {self.version} jars:\n{tail}")

    # --- lifecycle ------------------------------------------------------------------------
    def running(self) -> BrokerInfo | None:
        """The broker started from this state directory, if its process is alive."""
        try:  # keys another version wrote are ignored
            known = {f.name for f in dataclasses.fields(BrokerInfo)}
            saved = json.loads(self._info_file.read_text())
            info = BrokerInfo(**{key: value for key, value in saved.items() if key in known})
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            return None
        return info if _pid_alive(info.pid) else None

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> BrokerInfo:
        """Start the broker (or return the one already running) and wait until it answers."""
        with _locked(self.state_dir / ".lock"):
            info = self.running()
            if info is not None:
                return info
            java = java_binary()
            classpath = self.classpath()
            port, controller_port, extra_port = self._choose_ports()
            self._write_config(port, controller_port, extra_port)
            self._format_once(java, classpath)
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.logs_dir}", "-cp", classpath, "kafka.Kafka",
                str(self._config_file),
            ]
            with (self.logs_dir / "console.log").open("ab") as console:
                proc = subprocess.Popen(
                    cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, cwd=self.state_dir,
                )
            info = BrokerInfo(proc.pid, port, controller_port, self.version, extra_port)
            self._info_file.write_text(json.dumps(info.__dict__))
            self._wait_ready(proc, info, timeout_s)
            return info

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S, kill: bool = False) -> bool:
        """Stop the broker: SIGTERM (controlled shutdown), SIGKILL after ``timeout_s`` or when
        ``kill`` is set. Returns False when none was running."""
        with _locked(self.state_dir / ".lock"):
            info = self.running()
            if info is None:
                self._info_file.unlink(missing_ok=True)
                return False
            os.kill(info.pid, signal.SIGKILL if kill else signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _pid_alive(info.pid):
                if time.monotonic() > deadline:
                    os.kill(info.pid, signal.SIGKILL)
                    deadline = time.monotonic() + 10
                time.sleep(0.1)
            self._info_file.unlink(missing_ok=True)
            return True

    # --- helpers --------------------------------------------------------------------------
    def _choose_ports(self) -> tuple[int, int, int | None]:
        """The ports used last time when free (stable bootstrap address), else the preferred
        port, else any free port; the controller (and extra listener's) port likewise."""
        last = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = json.loads((self.state_dir / "ports.json").read_text())
        port = next(
            (p for p in (last.get("port"), self.preferred_port) if p and _port_free(p)),
            None,
        ) or free_port()
        taken = {port}

        def other(previous: int | None) -> int:
            if previous and previous not in taken and _port_free(previous):
                chosen = previous
            else:
                chosen = next(p for p in iter(free_port, None) if p not in taken)
            taken.add(chosen)
            return chosen

        controller = other(last.get("controller_port"))
        extra = other(last.get("extra_port")) if self.extra_listener else None
        (self.state_dir / "ports.json").write_text(
            json.dumps({"port": port, "controller_port": controller, "extra_port": extra})
        )
        return port, controller, extra

    def _write_config(self, port: int, controller_port: int, extra_port: int | None = None) -> None:
        template = Template((DEPLOY_DIR / "server.properties.in").read_text())
        overrides = "".join(f"{key}={value}\n" for key, value in self.overrides.items())
        extra = self.extra_listener if extra_port is not None else None
        self._config_file.write_text(
            template.substitute(
                port=port, controller_port=controller_port, data_dir=self.data_dir, overrides=overrides,
                extra_listeners=f",{extra.name}://127.0.0.1:{extra_port}" if extra else "",
                extra_protocols=f",{extra.name}:{extra.protocol}" if extra else "",
                extra_properties=extra.properties() if extra else "",
            )
        )

    def _format_once(self, java: str, classpath: str) -> None:
        """Format the KRaft storage the first time only: restarts keep the data."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _uuid_base64()
        cmd = [
            java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
            "-c", str(self._config_file), "-g",
            *(self.extra_listener.format_args() if self.extra_listener else []),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaLocalError(f"formatting {self.data_dir} failed:\n{done.stderr[-2000:]}")

    def _wait_ready(self, proc: subprocess.Popen, info: BrokerInfo, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._info_file.unlink(missing_ok=True)
                raise KafkaLocalError(
                    f"the broker exited with code {proc.returncode} during startup; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if metadata_answers(info.bootstrap, timeout_s=2.0):
                return
            time.sleep(0.5)
        self.stop(kill=True)
        raise KafkaLocalError(f"the broker did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log (console output when the log is empty)."""
        for path in (self.log_file, self.logs_dir / "console.log"):
            if path.exists() and path.stat().st_size:
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log output)"

    def served_version(self) -> str | None:
        """The version the running broker logged at startup (``Kafka version: X``)."""
        if not self.log_file.exists():
            return None
        found = re.findall(r"Kafka version: (\S+)", self.log_file.read_text(errors="replace"))
        return found[-1] if found else None


def java_binary() -> str:
    """The java binary (``JAVA_HOME`` first), checked to be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaLocalError("Java 17+ is needed to run the Kafka broker: install a JDK or set JAVA_HOME")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', done.stderr)
    if not match or int(match.group(1)) < 17:
        raise KafkaLocalError(f"Kafka 4.x needs Java 17+, found: {done.stderr.strip()[:200]}")
    return java


def _uuid_base64() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding. Never one starting
    with "-", which the storage tool's argument parser would take for an option (1 in 64 would)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def local_kafka(home: Path, **kwargs: object) -> LocalKafka:
    """The project's default local broker: state in ``home/kafka``, jars in ``home/jars``."""
    return LocalKafka(home / "kafka", home / "jars", **kwargs)
