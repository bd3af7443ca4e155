"""Schedules as data: seeding on first start, validated updates, the policy they imply."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import trading_calendar
from services.scheduler.catalogue import DEFAULT_WORKFLOW_ID
from services.scheduler.cron import ScheduleError, parse_cron, parse_timezone
from services.scheduler.rows import Schedule
from services.scheduler.slot_decisions import MisfirePolicy, SchedulePolicy
from shared.events import RunParams

log = logging.getLogger(__name__)

# A new schedule: a run at a time (the next slot waits for it), the most recent missed
# slot fired after downtime if it is at most an hour late, NYSE trading days only.
DEFAULT_MISFIRE_POLICY = MisfirePolicy.LAST
DEFAULT_MISFIRE_WINDOW_SECONDS = 3600
DEFAULT_MAX_ACTIVE_RUNS = 1
MAX_MISFIRE_WINDOW_SECONDS = 30 * 86400
# More runs at once than this is not a limit but a typo (and the column is a 32-bit integer).
MAX_ACTIVE_RUNS = 1000


def schedule_policy(row: Schedule) -> SchedulePolicy:
    return SchedulePolicy(
        cron=row.cron,
        zone=parse_timezone(row.timezone),
        paused=row.paused,
        misfire_policy=MisfirePolicy(row.misfire_policy),
        misfire_window=timedelta(seconds=row.misfire_window_seconds),
        max_active_runs=row.max_active_runs,
        calendar=row.calendar,
    )


def validated_params(params: dict[str, Any] | RunParams) -> dict[str, Any]:
    try:
        return RunParams.model_validate(params).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
        )
        raise ScheduleError(f"invalid params: {problems}") from None


async def seed_default_schedule(
    sessions: async_sessionmaker[AsyncSession], *, cron: str, timezone: str, symbols: list[str], now: datetime
) -> bool:
    """Create the default workflow's schedule from the environment, on first start only.

    Returns True if it was created. Afterwards the API is the source of truth and the
    environment is ignored (logged when it differs).
    """
    async with sessions.begin() as session:
        existing = await session.get(Schedule, DEFAULT_WORKFLOW_ID)
        if existing is not None:
            if (existing.cron, existing.timezone) != (" ".join(cron.split()), timezone):
                log.info(
                    "WORKFLOW_SCHEDULE / WORKFLOW_TIMEZONE differ from the stored schedule and are ignored: "
                    "the schedule is data now, change it through the API",
                    extra={"stored_cron": existing.cron, "stored_timezone": existing.timezone},
                )
            return False
        try:
            values = {
                "cron": parse_cron(cron),
                "timezone": parse_timezone(timezone).key,
                "default_params": validated_params({"symbols": symbols} if symbols else {}),
            }
        except ScheduleError as exc:
            raise ScheduleError(f"cannot seed the default schedule from WORKFLOW_SCHEDULE / "
                                f"WORKFLOW_TIMEZONE / WATCHLIST: {exc}") from None
        inserted = await session.scalar(
            insert(Schedule)
            .values(
                workflow_id=DEFAULT_WORKFLOW_ID,
                paused=False,
                misfire_policy=str(DEFAULT_MISFIRE_POLICY),
                misfire_window_seconds=DEFAULT_MISFIRE_WINDOW_SECONDS,
                max_active_runs=DEFAULT_MAX_ACTIVE_RUNS,
                calendar=trading_calendar.DEFAULT_CALENDAR,
                evaluated_until=now,
                created_at=now,
                updated_at=now,
                **values,
            )
            .on_conflict_do_nothing()
            .returning(Schedule.workflow_id)
        )
    if inserted:
        log.info("seeded the default schedule", extra={"workflow_id": DEFAULT_WORKFLOW_ID, **values})
    return inserted is not None


def validated_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Check a partial schedule update; ScheduleError with a clear message if unusable."""
    clean: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "cron":
            clean["cron"] = parse_cron(value)
        elif field == "timezone":
            clean["timezone"] = parse_timezone(value).key
        elif field == "calendar":
            clean["calendar"] = trading_calendar.parse_calendar(value)
        elif field == "misfire_policy":
            clean["misfire_policy"] = str(MisfirePolicy(value))
        elif field == "misfire_window_seconds":
            if not 0 <= value <= MAX_MISFIRE_WINDOW_SECONDS:
                raise ScheduleError(f"misfire_window_seconds must be between 0 and {MAX_MISFIRE_WINDOW_SECONDS}")
            clean["misfire_window_seconds"] = value
        elif field == "max_active_runs":
            if value is not None and not 1 <= value <= MAX_ACTIVE_RUNS:
                raise ScheduleError(f"max_active_runs must be between 1 and {MAX_ACTIVE_RUNS}, or null for no limit")
            clean["max_active_runs"] = value
        elif field == "default_params":
            clean["default_params"] = validated_params(value or {})
            if "as_of" in clean["default_params"]:
                raise ScheduleError("default_params cannot hold as_of: it would pin every run of the schedule "
                                    "to one date; give as_of to a single run or use a backfill")
        elif field == "paused":
            clean["paused"] = bool(value)
        else:
            raise ScheduleError(f"{field!r} is not a schedule setting")
    return clean


async def update_schedule(session: AsyncSession, workflow_id: str, changes: dict[str, Any], *, now: datetime) -> Schedule | None:
    """Apply validated changes; the loop picks them up at its next tick."""
    row = await session.scalar(select(Schedule).where(Schedule.workflow_id == workflow_id).with_for_update())
    if row is None:
        return None
    for field, value in changes.items():
        setattr(row, field, value)
    row.updated_at = now
    return row
