"""Headless Chromium for the browser test and for the first-screen screenshot beside a committed
report (python tests/browser.py results/default/report.html results/default/first-screen.png)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

# flags that keep Chromium off the network this machine does not have, and out of any profile
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1400")


def chromium(profile: Path):
    """A Chromium WebDriver with the browser's console log kept; Debian's chromium and chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver_path, "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def first_screen(report: Path, png: Path) -> None:
    """What a reader sees on opening the report, before scrolling."""
    with tempfile.TemporaryDirectory() as profile:
        driver = chromium(Path(profile))
        try:
            driver.get(report.resolve().as_uri())
            driver.save_screenshot(str(png))
        finally:
            driver.quit()


if __name__ == "__main__":
    first_screen(Path(sys.argv[1]), Path(sys.argv[2]))
