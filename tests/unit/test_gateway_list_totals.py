"""The artifacts page shows a list's total as the service gave it: "10,000+" when the
service stopped counting at its cap, the exact number otherwise."""

from __future__ import annotations

import pytest

from tests.unit.test_gateway_pages import ARTIFACT, get, services

pytestmark = pytest.mark.unit


def listing(total: int, exact: bool | None) -> dict:
    page = {"artifacts": [ARTIFACT], "total": total, "limit": 50, "next_cursor": "a1~00"}
    return page if exact is None else {**page, "total_is_exact": exact}


@pytest.mark.parametrize(
    ("total", "exact", "shown"),
    [(10_000, False, "10,000+ artifacts"), (10_000, True, "10,000 artifacts"), (1, True, ">1 artifact<"),
     (2_345, None, "2,345 artifacts")],
)
async def test_the_count_says_when_it_is_a_lower_bound(total, exact, shown):
    page = await get(services({"/api/artifacts/": listing(total, exact)}), "/artifacts")
    assert page.status_code == 200
    assert shown in page.text
