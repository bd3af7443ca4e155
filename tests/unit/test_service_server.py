"""Every service's uvicorn runs on uvloop with the httptools parser."""

from __future__ import annotations

import pytest

from ibflow import cli

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("service", sorted(cli.SERVICES))
def test_each_service_is_served_on_uvloop_and_httptools(monkeypatch, service):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options, app=app))
    cli.run_service(service)
    assert (seen["loop"], seen["http"]) == ("uvloop", "httptools")
    assert seen["app"] == cli.SERVICES[service].app_factory and seen["factory"] is True


def test_uvloop_and_httptools_are_installed():
    import httptools
    import uvloop

    uvloop.new_event_loop().close()
    assert httptools.HttpRequestParser is not None
