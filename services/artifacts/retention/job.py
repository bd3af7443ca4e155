"""The artifacts service's retention: its rules, in words and as one sweep.

Order matters within a sweep: artifacts expire before blobs are collected, so the
blobs that only expired artifacts referenced go in the same sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.artifacts.db.models import RetentionLedgerEntry
from services.artifacts.retention.blobs import collect_blobs
from services.artifacts.retention.expiry import expire_artifacts, expire_logs
from services.artifacts.settings import ArtifactsSettings
from shared.artifact_store import ArtifactStore
from shared.retention import Removal, RetentionJob

log = logging.getLogger(__name__)
SERVICE = "artifacts"
Apply = Callable[[datetime], Awaitable[Removal]]


@dataclass(frozen=True)
class Rule:
    target: str
    words: str
    apply: Apply


@dataclass(frozen=True)
class ArtifactsRetention:
    settings: ArtifactsSettings
    sessions: async_sessionmaker
    store: ArtifactStore

    def rules(self) -> list[Rule]:
        """Each configured rule: what it deletes, in words, and how to apply it at an instant."""
        settings = self.settings
        rules: list[Rule] = []
        if (days := settings.retention_logs_days) is not None:
            rules.append(self._logs_rule(days))
        listed = sorted(settings.retention_artifacts_days_by_kind)
        expiring = [(kind, days) for kind, days in sorted(settings.retention_artifacts_days_by_kind.items())
                    if days is not None]
        if settings.retention_artifacts_days is not None:
            expiring.append((None, settings.retention_artifacts_days))
        rules.extend(self._artifacts_rule(kind, days, listed) for kind, days in expiring)
        if (hours := settings.retention_blob_grace_hours) is not None:
            rules.append(self._blobs_rule(hours))
        return rules

    @property
    def _batch(self) -> int:
        return self.settings.retention_batch_rows

    def _alive_since(self, now: datetime) -> datetime:
        """Queued or running runs with an event since then are in flight (not abandoned)."""
        return now - timedelta(seconds=self.settings.artifacts_run_abandoned_after_seconds)

    def _logs_rule(self, days: int) -> Rule:
        rule = f"log records older than {days} days"

        def apply(now: datetime) -> Awaitable[Removal]:
            return expire_logs(self.sessions, cutoff=now - timedelta(days=days), batch=self._batch, rule=rule)

        return Rule("log_records", rule, apply)

    def _artifacts_rule(self, kind: str | None, days: int, listed: list[str]) -> Rule:
        keep = self.settings.retention_keep_successful_runs
        what = f"artifacts of kind {kind}" if kind else ("artifacts of every other kind" if listed else "artifacts")
        kept_runs = f"the last {keep} succeeded runs of each workflow and of " if keep else ""
        rule = f"{what} older than {days} days, except those of {kept_runs}runs still in flight"

        def apply(now: datetime) -> Awaitable[Removal]:
            return expire_artifacts(self.sessions, cutoff=now - timedelta(days=days), kind=kind, listed_kinds=listed,
                                    keep=keep, alive_since=self._alive_since(now), batch=self._batch, rule=rule)

        return Rule("artifacts", rule, apply)

    def _blobs_rule(self, hours: int) -> Rule:
        rule = (f"store blobs no artifact references, last written more than {hours} h ago "
                "and before every run still in flight began")

        def apply(now: datetime) -> Awaitable[Removal]:
            return collect_blobs(self.store, self.sessions, now=now, grace=timedelta(hours=hours),
                                 alive_since=self._alive_since(now), rule=rule)

        return Rule("blobs", rule, apply)

    async def sweep(self) -> list[Removal]:
        """Every rule once; a rule that fails is recorded with its error and the others still run."""
        removals = []
        for rule in self.rules():
            try:
                removals.append(await rule.apply(datetime.now(UTC)))
            except Exception as exc:
                log.exception("retention rule failed", extra={"rule": rule.words})
                reason = str(exc).splitlines()[0] if str(exc) else ""
                removals.append(Removal(target=rule.target, rule=rule.words, error=f"{type(exc).__name__}: {reason}"))
        return removals


def retention_job(settings: ArtifactsSettings, engine: AsyncEngine, sessions: async_sessionmaker,
                  store: ArtifactStore) -> RetentionJob:
    retention = ArtifactsRetention(settings, sessions, store)
    return RetentionJob(service=SERVICE, engine=engine, ledger=RetentionLedgerEntry.__table__,
                        sweep=retention.sweep, timing=settings, rules=[rule.words for rule in retention.rules()])
