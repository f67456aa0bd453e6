"""One headless chromium per test module of the UI (tests/helpers/browser.py)."""

import pytest

from browser import chrome


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()
