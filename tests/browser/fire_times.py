"""What the workflows page must show for a schedule's next fire times: each of the API's
`next_fire_times` in order, local (in the schedule's zone, with its offset) and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from playwright.async_api import Locator, expect


def expected_rows(workflow: dict) -> list[tuple[str, str, str]]:
    """(datetime attribute, local text, UTC text) per fire time, derived from the API's JSON."""
    rows = []
    for at, local in zip(workflow["next_fire_times"], workflow["next_fire_times_local"], strict=True):
        local_time = datetime.fromisoformat(local)
        utc_time = datetime.fromisoformat(at).astimezone(UTC)
        assert local_time == utc_time, f"the API's local {local} is not the instant {at}"
        offset = f"{local_time:%z}"
        rows.append((at, f"{local_time:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}", f"{utc_time:%Y-%m-%d %H:%M:%S} UTC"))
    return rows


async def assert_fire_times_shown(card: Locator, workflow: dict) -> None:
    rows = expected_rows(workflow)
    assert rows, "the API gave no next fire times to check"
    items = card.locator(".fire-times li")
    await expect(items).to_have_count(len(rows))
    for index, (at, local_text, utc_text) in enumerate(rows):
        item = items.nth(index)
        await expect(item.locator("time")).to_have_attribute("datetime", at)
        await expect(item.locator("time")).to_have_text(local_text)
        await expect(item.locator("span")).to_contain_text(utc_text)
