"""Request dependencies: the running service's parts, a database session, safe ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.artifacts.runtime import Runtime
from shared.http_params import id_path


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with runtime(request).sessions() as db_session:
        yield db_session


def execution_id(execution_id: Annotated[str, id_path(200)]) -> str:
    """An execution id from the path, refused (422) when it looks like a path trick.

    Ids are not file paths here, but they travel through proxies and into links: `..`,
    slashes (decoded `%2F`), backslashes and control characters have no business in one.
    """
    return execution_id


RuntimeDep = Annotated[Runtime, Depends(runtime)]
SessionDep = Annotated[AsyncSession, Depends(session)]
ExecutionIdDep = Annotated[str, Depends(execution_id)]
