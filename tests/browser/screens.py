"""What browser tests do to a page besides clicking: keep a picture, read its text."""

from playwright.async_api import Page


async def shot(page: Page, folder, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def visible_text(page: Page) -> str:
    return await page.evaluate("document.body.innerText")
