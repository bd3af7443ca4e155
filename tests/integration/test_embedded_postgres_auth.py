"""The embedded PostgreSQL trusts no one: every connection needs the generated password,
which is kept beside the data folder, readable by its owner only."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import asyncpg
import pytest
from sqlalchemy import make_url

from ibflow.devstack.postgres import SUPERUSER, EmbeddedPostgres, postgres_binary
from shared.database import describe_database, normalize_database_url
from tests.support import private_tmp

pytestmark = pytest.mark.integration


async def connects(server: EmbeddedPostgres, password: str | None) -> bool:
    try:
        connection = await asyncpg.connect(host=server.host, port=server.port, user=SUPERUSER, database="postgres",
                                           password=password, timeout=10)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    await connection.close()
    return True


def psql_without_password(server: EmbeddedPostgres, *target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [postgres_binary("psql"), *target, "-U", SUPERUSER, "-d", "postgres", "-w", "-c", "SELECT 1"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def fresh_server():
    server = EmbeddedPostgres(private_tmp("pg-auth") / "data", durable=False)
    yield server
    server.remove()
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


async def test_a_connection_without_the_password_is_refused(fresh_server):
    fresh_server.start()
    assert not await connects(fresh_server, None)
    assert not await connects(fresh_server, "guess")
    assert await connects(fresh_server, fresh_server.password)
    # Over TCP and over the Unix socket alike.
    for target in (["-h", fresh_server.host, "-p", str(fresh_server.port)],
                   ["-h", str(fresh_server.data_dir), "-p", str(fresh_server.port)]):
        refused = psql_without_password(fresh_server, *target)
        assert refused.returncode != 0 and "password" in refused.stderr


async def test_the_password_is_kept_beside_the_data_folder_for_its_owner_only(fresh_server):
    fresh_server.start()
    assert fresh_server.password_file == fresh_server.data_dir.parent / "data.password"
    assert stat.S_IMODE(fresh_server.password_file.stat().st_mode) == 0o600
    assert len(fresh_server.password) >= 32
    url = fresh_server.url("postgres")
    assert make_url(url).password == fresh_server.password
    # What /health and the logs show of it.
    described = describe_database(normalize_database_url(url))
    assert fresh_server.password not in str(described) and "***" in described["url"]
    assert fresh_server.password not in fresh_server.url("postgres", hide_password=True)


async def test_the_same_password_after_a_restart(fresh_server):
    fresh_server.start()
    password = fresh_server.password
    fresh_server.stop()
    fresh_server.start()
    assert fresh_server.password == password and await connects(fresh_server, password)


async def test_a_data_folder_made_with_trust_gets_the_password_on_its_next_start(fresh_server):
    server = fresh_server
    server._prepare_user()
    subprocess.run([postgres_binary("initdb"), "-D", str(server.data_dir), "--auth=trust", "-U", SUPERUSER],
                   check=True, capture_output=True, **server._run_as)
    server.start()
    assert not await connects(server, None)
    assert await connects(server, server.password)


async def test_the_test_server_needs_its_password_too(postgres_server):
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("TEST_DATABASE_URL names an outside server, with its own rules")
    url = make_url(postgres_server)
    assert url.password
    connection = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database,
                                       password=url.password)
    await connection.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database, password="x")
