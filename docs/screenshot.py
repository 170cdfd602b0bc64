"""Take docs/serve-try.png: the Try page of a running `scorer serve` after uploading the demo's creatives.

    scorer demo && scorer serve &
    python docs/screenshot.py http://127.0.0.1:8000 demo/creatives/*.jpg [--token TOKEN]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--token", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve-try.png"))
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tempfile.mkdtemp()}",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1100", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(f"{args.url}/try")
        if args.token:
            driver.find_element(By.ID, "token").send_keys(args.token)
            driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "creatives"))
        driver.find_element(By.ID, "creatives").send_keys("\n".join(str(f.absolute()) for f in args.files))
        driver.find_element(By.ID, "score").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.ID, "results"))
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
