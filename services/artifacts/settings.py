"""Settings of the artifacts service, built at start-up from the environment / `.env`."""

from __future__ import annotations

from pydantic import Field

from services.artifacts.retention.settings import ArtifactsRetentionSettings
from shared.artifact_store import ArtifactStoreSettings
from shared.settings import DatabaseSettings, HttpSettings, KafkaSettings


class ArtifactsSettings(KafkaSettings, DatabaseSettings, HttpSettings, ArtifactStoreSettings,
                        ArtifactsRetentionSettings):
    artifacts_port: int = 8001
    # Off for query-only replicas (and the log benchmark): no consumer, no broker needed.
    artifacts_consumer_enabled: bool = True
    artifacts_consumer_group_id: str = "ibflow-artifacts"
    # Up to this many records per transaction: each batch costs a dozen statements and
    # two commits whatever its size, so a backlog drains several times faster in big
    # ones; a quiet topic still gives small batches at once (a fetch returns what is there).
    artifacts_batch_max_records: int = Field(default=5000, ge=1, le=50_000)
    artifacts_batch_timeout_ms: int = Field(default=200, ge=1)
    # How much one fetch from the broker may bring, per partition and in all. (4 MB per
    # partition drained the ingest benchmark's backlog slower than 1 MB, on tansu.)
    artifacts_max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    artifacts_fetch_max_bytes: int = Field(default=50 * 1024 * 1024, ge=64 * 1024)
    # How long a batch is retried in place while the database is unreachable before the
    # consumer seeks back and fetches it again (polling keeps its group membership).
    artifacts_db_retry_seconds: float = Field(default=30.0, gt=0)
    artifacts_db_timeout_seconds: float = Field(default=5.0, gt=0)
    artifacts_log_stream_poll_seconds: float = Field(default=0.5, gt=0)
    # Live log streams one process serves at once; more are refused with 429. Each
    # holds a database connection only for the moment of each poll.
    artifacts_max_log_streams: int = Field(default=100, ge=1)
    # The connection pool: this many kept open, and up to max_overflow more at busy times.
    artifacts_db_pool_size: int = Field(default=5, ge=1)
    artifacts_db_max_overflow: int = Field(default=5, ge=0)
    # Logs travel on their own topic, so some may land after run.succeeded: a finished
    # run's live follow waits this long for stragglers before it ends.
    artifacts_log_stream_grace_seconds: float = Field(default=2.0, ge=0)
    # A run that is queued or running with no event of any kind for this long is shown
    # as `abandoned` ("no event since ..."); its next event, if one ever comes, revives it.
    artifacts_run_abandoned_after_seconds: float = Field(default=6 * 3600, gt=0)
    # Lists count their matches up to this many; beyond it `total` is this cap and
    # `total_is_exact` false, so a page costs the same at any size of the store.
    artifacts_list_total_cap: int = Field(default=10_000, ge=1, le=10_000_000)
