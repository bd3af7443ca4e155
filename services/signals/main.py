"""The signals service: FastAPI (`/health`) and a FastStream Kafka consumer of
`ibflow.runs.requested` that runs `ibkr_trading_signal_workflow` for each request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from services.signals.consumer import RunRequestHandler
from services.signals.health import SERVICE, health_report
from services.signals.market_data.factory import build_provider
from services.signals.market_data.provider import MarketDataProvider
from services.signals.scorecard.stored_signals import ArtifactsApiStoredSignals
from services.signals.settings import SignalsSettings
from services.signals.workflow.catalogue import WORKFLOWS
from services.signals.workflow.previous_signals import ArtifactsApiPreviousSignals
from services.signals.workflow.runner import RunResources
from shared import topics
from shared.artifact_store import ArtifactStore
from shared.consuming import keep_bytes
from shared.events import (
    ArtifactCreated,
    DeadLetter,
    Event,
    LogRecorded,
    SignalGenerated,
)
from shared.health import HealthReport
from shared.http import install_error_handlers
from shared.json_logging import configure_logging
from shared.kafka import TopicKeeper, consumer_options, ensure_topics, new_broker, start_broker
from shared.metrics import install_metrics, observe_broker_lag
from shared.request_guard import RequestGuard
from shared.startup import Startup, StartupGate, configuration
from shared.tracing import inject, install_tracing

CLIENT_ID = "ibflow-signals"
OUTPUT_TOPICS = {
    topics.RUNS_EVENTS: "Run and step lifecycle: run.started/succeeded/failed, step.started/succeeded/failed.",
    topics.ARTIFACTS: "artifact.created: one per artifact of a step (inline JSON or a content-store uri).",
    topics.LOGS: "log.record: the run's structured log lines; `fields` is an object.",
    topics.SIGNALS: "signal.generated: one per symbol of a successful run, for downstream consumers.",
    topics.DEADLETTER: "Run requests that could not be decoded or validated, with the reason.",
}
OUTPUT_SCHEMAS = {
    topics.ARTIFACTS: ArtifactCreated,
    topics.LOGS: LogRecorded,
    topics.SIGNALS: SignalGenerated,
    topics.DEADLETTER: DeadLetter,
}


def max_poll_interval_ms(settings: SignalsSettings) -> int:
    """The consumer may spend a whole run between two polls; aiokafka leaves the group
    (and the run's commit fails) if a poll comes later than this."""
    longest_steps = max(len(workflow.steps) for workflow in WORKFLOWS.values())
    return int((longest_steps * settings.step_timeout_seconds + 60) * 1000)


class KafkaEventPublisher:
    """Publishes events to their topic, keyed by execution id (one run, one partition)."""

    def __init__(self, broker: KafkaBroker) -> None:
        # Declared publishers also document the output topics in the AsyncAPI schema.
        self._publishers = {
            topic: broker.publisher(topic, title=topic, description=description, schema=OUTPUT_SCHEMAS.get(topic))
            for topic, description in OUTPUT_TOPICS.items()
        }

    async def __call__(self, event: Event) -> asyncio.Future:
        """Hands the event to the producer; the future settles with the broker's
        acknowledgement, which the run's emitter awaits (workflow/emitter.py)."""
        # the current span's context (the run's, or its step's) travels with the event
        return await self._publishers[event.topic].publish(
            event.to_bytes(), key=event.key, headers=inject({}), no_confirm=True
        )

    async def dead_letter(self, letter: DeadLetter, key: bytes | None) -> None:
        await self._publishers[topics.DEADLETTER].publish(letter.to_bytes(), key=key)


def subscribe_run_requests(broker: KafkaBroker, settings: SignalsSettings, handler: RunRequestHandler) -> None:
    @broker.subscriber(
        topics.RUNS_REQUESTED,
        # A failed run is published and committed like a successful one; only a broker
        # that stays away longer than the rule's patience raises, and then the request
        # is fetched again.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=keep_bytes,
        max_poll_interval_ms=max_poll_interval_ms(settings),
        title="ibflow.runs.requested",
        description="RunRequested: run the workflow's steps and publish what they produce.",
        **consumer_options(settings, group_id=settings.signals_consumer_group_id),
    )
    async def on_run_requested(message: KafkaMessage) -> None:
        await handler.handle(message.raw_message)


def create_app(settings: SignalsSettings | None = None) -> FastAPI:
    """Without `settings` (uvicorn's factory call) this is the service's own process: a
    start-up that fails for good ends it. With them, `app.state.startup` reports it."""
    own_process = settings is None
    with configuration(SERVICE, exit_on_error=own_process):
        settings = settings or SignalsSettings()
        provider: MarketDataProvider = build_provider(settings)
        store = ArtifactStore.from_url(settings.artifact_store_url)
    configure_logging(SERVICE, settings.log_level)
    resources = RunResources(
        provider=provider,
        store=store,
        watchlist=settings.watchlist_symbols,
        history_days=settings.history_days,
        step_timeout_seconds=settings.step_timeout_seconds,
        inline_max_bytes=settings.artifact_inline_max_bytes,
        previous_signals=ArtifactsApiPreviousSignals(
            settings.artifacts_url, timeout=settings.artifacts_timeout_seconds
        ),
        stored_signals=ArtifactsApiStoredSignals(settings.artifacts_url, timeout=settings.artifacts_timeout_seconds),
    )
    broker = new_broker(settings, client_id=CLIENT_ID)
    publisher = KafkaEventPublisher(broker)
    handler = RunRequestHandler(
        workflows=WORKFLOWS, resources=resources, publish=publisher, publish_dead_letter=publisher.dead_letter,
        max_future_skew=timedelta(seconds=settings.event_max_future_skew_seconds),
        max_attempts=settings.consumer_max_attempts,
    )
    subscribe_run_requests(broker, settings, handler)
    startup = Startup(SERVICE, exit_on_failure=own_process)
    topic_keeper = TopicKeeper(settings)
    provider_started = False

    async def start() -> None:
        """An unreachable broker is waited out; a refused idempotent producer fails for
        good. An unreachable IB gateway does not hold the start-up: `ibkr` says so."""
        nonlocal provider_started
        servers = settings.kafka_bootstrap_servers
        await startup.retrying(f"waiting for the broker at {servers}", lambda: ensure_topics(settings))
        topic_keeper.start()
        startup.step(f"starting the {provider.name} market data provider")
        await provider.start()
        provider_started = True
        await startup.retrying(f"starting the producer and consumer on the broker at {servers}",
                               lambda: start_broker(broker, settings, client_id=CLIENT_ID))

    async def stop() -> None:
        nonlocal provider_started
        await topic_keeper.stop()
        await broker.stop()
        if provider_started:
            provider_started = False
            await provider.stop()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # HTTP is served once this yields: the slow part runs behind `/health`'s `starting`.
        startup.begin(start, cleanup=stop)
        try:
            yield
        finally:
            await startup.stop()
            await stop()

    app = FastAPI(
        title="ibflow signals",
        description="Runs ibkr_trading_signal_workflow for each RunRequested and publishes its events.",
        lifespan=lifespan,
    )
    app.add_middleware(StartupGate, startup=startup)
    app.add_middleware(RequestGuard, max_body_bytes=settings.http_max_body_bytes)
    install_metrics(app, refresh=[lambda: observe_broker_lag(broker)])
    install_tracing(app, SERVICE)
    install_error_handlers(app)
    app.state.startup = startup
    app.state.settings = settings
    app.state.broker = broker
    app.state.provider = provider
    app.state.store = store

    @app.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
    async def health() -> JSONResponse:
        if not startup.ready:
            return startup.health_response()
        report = await health_report(settings, provider, store)
        return JSONResponse(report.model_dump(mode="json"), status_code=503 if report.status == "unhealthy" else 200)

    return app
