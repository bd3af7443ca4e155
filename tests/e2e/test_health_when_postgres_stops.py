"""With PostgreSQL down, /health says so (where, masked) and the gateway still answers."""

import shutil
import time

import httpx
import pytest

from ibflow.devstack.postgres import EmbeddedPostgres
from tests.conftest import private_tmp

pytestmark = pytest.mark.e2e
PASSWORD = "pw-that-must-not-leak-7Q"


@pytest.fixture(scope="module")
def postgres():
    server = EmbeddedPostgres(private_tmp("pg-stop") / "data", durable=False)
    server.start()
    server.execute(f"CREATE ROLE ibflow_user LOGIN PASSWORD '{PASSWORD}'")
    server.create_database("ibflow_health", owner="ibflow_user")
    yield server
    server.remove()
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def health_when(gateway: str, predicate, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{gateway}/health", timeout=15)
        assert response.status_code in (200, 503)
        body = response.json()
        if predicate(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_stopped_postgres_is_reported_unhealthy_with_its_address_masked(start_stack, postgres):
    # trust authentication accepts any password: enough to prove the password is masked
    url = f"postgresql://ibflow_user:{PASSWORD}@127.0.0.1:{postgres.port}/ibflow_health"
    stack = start_stack(DATABASE_URL=url)
    healthy = health_when(stack.gateway_url, lambda b: b["components"]["database"]["status"] == "ok")
    assert healthy["components"]["database"]["status"] == "ok", healthy

    postgres.stop()
    try:
        body = health_when(stack.gateway_url, lambda b: b["components"]["database"]["status"] == "unhealthy")
        database = body["components"]["database"]
        assert body["status"] == "unhealthy"
        assert database["status"] == "unhealthy"
        assert database["detail"]["host"] == "127.0.0.1"
        assert database["detail"]["port"] == postgres.port
        assert database["detail"]["database"] == "ibflow_health"
        assert "***" in database["detail"]["url"]
        assert PASSWORD not in httpx.get(f"{stack.gateway_url}/health").text
        # the gateway itself still serves
        assert httpx.get(f"{stack.gateway_url}/docs", timeout=10).status_code == 200
    finally:
        postgres.start()
    recovered = health_when(stack.gateway_url, lambda b: b["components"]["database"]["status"] == "ok", timeout=60)
    assert recovered["components"]["database"]["status"] == "ok"
