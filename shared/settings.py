"""Settings pieces each service composes into its own settings class.

Built at start-up (never at import time) from the environment and an optional `.env`.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IbflowSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")


class KafkaSettings(IbflowSettings):
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # A group join takes about half the session timeout; tests on tansu use 3000/1000,
    # real Kafka refuses a session timeout under 6000.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    # tansu's fetch does not wake on new data: a short max wait keeps latency low.
    kafka_fetch_max_wait_ms: int = 50
    # On for real Kafka; tansu cannot start an idempotent producer, so the dev stack
    # and the tests turn it off.
    kafka_enable_idempotence: bool = True
    kafka_topic_partitions: int = Field(default=3, ge=1)
    # How often each service checks that ibflow's topics exist (a memory broker loses
    # them on restart) and creates the missing ones.
    kafka_topic_check_seconds: float = Field(default=10.0, gt=0)
    # Consumers dead-letter an event whose occurred_at is further ahead of their clock
    # than this: a far-future date would sort above every real run for good.
    event_max_future_skew_seconds: int = Field(default=300, ge=0)
    # How often a consumer tries a record whose handling fails for a reason that is not
    # an outage before it dead-letters it alone.
    consumer_max_attempts: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)


class DatabaseSettings(IbflowSettings):
    database_url: SecretStr


class HttpSettings(IbflowSettings):
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    ibflow_api_token: SecretStr | None = None
    # Larger request bodies are refused with 413 (shared/request_guard.py); the largest
    # real one, a schedule edit with 100 symbols, is a few KiB.
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
