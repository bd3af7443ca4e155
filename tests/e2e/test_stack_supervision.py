"""`ibflow up`'s stack: a service that cannot start is reported with the line that says
why, and one that dies later is restarted by the supervisor, as compose would."""

import os
import signal
import threading
import time

import httpx
import pytest

from ibflow.stack import StackStartError
from tests.support import wait_for_run

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"


class Messages:
    """What the supervisor says, collected from its thread."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, message: str) -> None:
        print(f"[supervisor] {message}")
        with self._changed:
            self._lines.append(message)
            self._changed.notify_all()

    def wait_for(self, *parts: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    if all(part in line for part in parts):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the supervisor never said {parts!r}; it said {self._lines}")
                self._changed.wait(remaining)


@pytest.fixture(scope="module")
def supervised(start_stack):
    stack = start_stack()
    messages = Messages()
    stack.supervise(say=messages)
    return stack, messages


def trigger_and_wait(gateway: str) -> dict:
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": ["IBM"]}},
                          timeout=10)
    assert response.status_code == 202, response.text
    return wait_for_run(gateway, response.json()["execution_id"], timeout=180)


def test_a_broker_that_refuses_idempotent_producers_stops_the_start_naming_the_variable(start_stack):
    with pytest.raises(StackStartError) as refused:
        start_stack(KAFKA_ENABLE_IDEMPOTENCE="true")
    message = str(refused.value)
    # the service stopped by itself: the stack did not wait for a time-out
    assert "exited during start-up (exit code 3)" in message
    assert "refuses idempotent producers" in message
    assert "KAFKA_ENABLE_IDEMPOTENCE=false" in message


def test_a_service_killed_with_sigkill_is_restarted_and_serves_again(supervised):
    stack, messages = supervised
    os.kill(stack.pid("signals"), signal.SIGKILL)
    messages.wait_for("the signals service died (killed by SIGKILL)", "restarting it in 1s (restart 1)")
    messages.wait_for("the signals service is up again after restart 1")
    assert stack.readiness("signals")[0]
    assert trigger_and_wait(stack.gateway_url)["status"] == "succeeded"


def test_the_broker_killed_is_restarted_with_its_topics_and_the_services_with_it(supervised):
    stack, messages = supervised
    os.kill(stack.broker.pid, signal.SIGKILL)
    messages.wait_for("the broker (tansu, memory storage) stopped")
    messages.wait_for("the broker is up again with its topics")
    for name in ("artifacts", "scheduler", "signals"):
        messages.wait_for(f"the {name} service is up again after the broker's restart")
    assert trigger_and_wait(stack.gateway_url)["status"] == "succeeded"
