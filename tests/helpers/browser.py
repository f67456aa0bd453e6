"""A headless Debian chromium driven by selenium through the system chromedriver: nothing is
downloaded (Selenium Manager is kept offline). `skip_reason()` says why the browser tests cannot run."""

from __future__ import annotations

import os
import shutil
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not CHROMIUM:
        return "no chromium on PATH (apt-get install chromium)"
    if not CHROMEDRIVER:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def chrome(width: int = 1300, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager: never fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait_until(predicate, timeout: float):
    """Poll `predicate` until it returns something truthy or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()
