"""Every service keeps the promises of its OpenAPI document, checked by schemathesis on a
real stack: every check (server errors, status codes, content types, response schemas
and headers, valid data accepted, invalid data refused, 405 with Allow, auth not
ignored...), through the gateway with and without the token, and on each service
directly.

Pinned (pyproject), offline (the stack is local), bounded (EXAMPLES per operation and
phase) and repeatable (a fixed seed, derandomized, no example database).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis

from ibflow.services import SERVICES
from services.artifacts.main import create_app as artifacts_app
from services.artifacts.settings import ArtifactsSettings
from services.gateway.downstream import Services
from services.gateway.main import create_app as gateway_app
from services.gateway.openapi import merge_openapi
from services.gateway.settings import GatewaySettings
from services.scheduler.main import create_app as scheduler_app
from services.scheduler.settings import SchedulerSettings
from services.signals.main import create_app as signals_app
from services.signals.settings import SignalsSettings

pytestmark = pytest.mark.e2e

TOKEN = "conformance-token"
EXAMPLES = 25
SEED = 20261202
# The stream of a run that does not end would never end a request: schemathesis stops
# reading after this many events.
MAX_STREAM_EVENTS = 5


def documents() -> dict[str, dict]:
    """Each service's OpenAPI document as its code builds it (no server needed: tests are
    generated when this module is collected), and the gateway's merge of them.
    `test_the_served_documents_are_these` checks the stack serves exactly these."""
    unused = "postgresql://docs@127.0.0.1:1/docs"  # building an app connects to nothing
    services = {
        "artifacts": artifacts_app(ArtifactsSettings(database_url=unused)).openapi(),
        "scheduler": scheduler_app(SchedulerSettings(database_url=unused)).openapi(),
        "signals": signals_app(SignalsSettings()).openapi(),
    }
    settings = GatewaySettings(ibflow_api_token=TOKEN)
    gateway = merge_openapi(gateway_app(settings).openapi(), {name: services[name] for name in ("artifacts", "scheduler")},
                            Services(None, settings).owner, token_required=True)
    return services | {"gateway": gateway}


DOCUMENTS = documents()


def schema(name: str, token: str | None):
    generation = {"max-examples": EXAMPLES, "deterministic": True, "database": "none"}
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": generation,
        "phases": {name: {"enabled": True} for name in ("examples", "coverage", "fuzzing")} | {
            "stateful": {"enabled": False},
        },
        "checks": {"enabled": True},
        "request-timeout": 30,
        "max-stream-events": MAX_STREAM_EVENTS,
        **({"headers": {"Authorization": f"Bearer {token}"}} if token else {}),
    })
    return schemathesis.openapi.from_dict(DOCUMENTS[name], config=config)


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(IBFLOW_API_TOKEN=TOKEN)


def base_url(stack, name: str) -> str:
    return stack.gateway_url if name == "gateway" else stack.env[SERVICES[name].url_env]


def differences(served, built, where: str = "") -> list[str]:
    if isinstance(served, dict) and isinstance(built, dict):
        return [d for key in sorted(served.keys() | built.keys(), key=str)
                for d in differences(served.get(key), built.get(key), f"{where}/{key}")]
    return [] if served == built else [f"{where}: served {served!r:.120}, built {built!r:.120}"]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_served_documents_are_these(stack, name):
    served = httpx.get(f"{base_url(stack, name)}/openapi.json", timeout=30).json()
    assert differences(served["paths"], DOCUMENTS[name]["paths"]) == []
    assert differences(served["components"], DOCUMENTS[name]["components"]) == []


@schema("gateway", TOKEN).parametrize()
def test_the_gateway_with_the_token(case, stack):
    case.call_and_validate(base_url=stack.gateway_url)


@schema("gateway", None).parametrize()
def test_the_gateway_without_the_token(case, stack):
    case.call_and_validate(base_url=stack.gateway_url)


@schema("artifacts", TOKEN).parametrize()
def test_the_artifacts_service(case, stack):
    case.call_and_validate(base_url=base_url(stack, "artifacts"))


@schema("scheduler", TOKEN).parametrize()
def test_the_scheduler_service(case, stack):
    case.call_and_validate(base_url=base_url(stack, "scheduler"))


@schema("signals", TOKEN).parametrize()
def test_the_signals_service(case, stack):
    case.call_and_validate(base_url=base_url(stack, "signals"))
