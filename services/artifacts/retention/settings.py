"""Retention settings of the artifacts service: how long each kind of data is kept.

Every age is unset by default: nothing is ever deleted unless it is configured.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.retention import RetentionTiming

_KIND_DAYS = re.compile(r"(?P<kind>[^=,\s]+)\s*=\s*(?P<days>\d+|never)")
NEVER = "never"


class ArtifactsRetentionSettings(RetentionTiming):
    # Log records whose time (occurred_at) is older than this many days.
    retention_logs_days: int | None = Field(default=None, ge=1)
    # Artifacts (created_at) older than this many days, for every kind that
    # RETENTION_ARTIFACTS_DAYS_BY_KIND does not name.
    retention_artifacts_days: int | None = Field(default=None, ge=1)
    # Per kind, e.g. `chart=30,market_data=90,model=never`; `never` keeps a kind forever.
    retention_artifacts_days_by_kind: Annotated[dict[str, int | None], NoDecode] = Field(default_factory=dict)
    # The artifacts of the last N succeeded runs of each workflow are kept whatever their age.
    retention_keep_successful_runs: int = Field(default=3, ge=0)
    # Store blobs that no artifact references and that nobody wrote for this many hours.
    retention_blob_grace_hours: int | None = Field(default=None, ge=1)

    @field_validator("retention_artifacts_days_by_kind", mode="before")
    @classmethod
    def _kind_days(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        parsed: dict[str, int | None] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            match = _KIND_DAYS.fullmatch(part)
            if match is None:
                raise ValueError(f"{part!r} is not KIND=DAYS (e.g. chart=30) or KIND=never")
            days = match.group("days")
            parsed[match.group("kind")] = None if days == NEVER else int(days)
        return parsed

    @field_validator("retention_artifacts_days_by_kind")
    @classmethod
    def _at_least_a_day(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        short = [kind for kind, days in value.items() if days is not None and days < 1]
        if short:
            raise ValueError(f"keep each kind at least 1 day (or never delete it): {', '.join(short)}")
        return value
