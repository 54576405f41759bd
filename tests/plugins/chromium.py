"""A real headless Chromium (Debian package ``chromium``) for testing HTML pages.

The ``chromium`` fixture finds the browser and offers three things a test
needs, each run as one short-lived headless process with a fresh profile and
every network-reaching feature switched off:

- ``chromium.dump_dom(page, fragment="...")``: load a local file (its ``#``
  fragment lets the page read state from ``location.hash``), let its scripts
  run for a virtual-time budget, and return the resulting DOM as HTML;
- ``chromium.screenshot(page, out, size=(w, h))``: a PNG of the page;
- ``chromium.run(url, *flags)``: anything else, returning the finished process.

No test is skipped when the browser is missing: the fixture fails, naming the
package to install (CI installs it, see ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Flags for a quiet, offline, reproducible headless browser.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    """The path of a Chromium binary, or None."""
    explicit = os.environ.get("ZOOPREP_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@dataclass
class Chromium:
    """Runs headless Chromium on local files; one process per call."""

    binary: str
    workdir: Path
    timeout: float = 120.0

    def url(self, page: Path, fragment: str = "") -> str:
        """The ``file://`` URL of a local page, with an optional ``#fragment``."""
        url = Path(page).resolve().as_uri()
        return f"{url}#{fragment.lstrip('#')}" if fragment else url

    def run(self, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
        """Run the browser on ``url`` with extra ``flags``; fail the test on error."""
        profile = tempfile.mkdtemp(prefix="profile-", dir=self.workdir)
        cmd = [self.binary, *FLAGS, f"--user-data-dir={profile}", *flags, url]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.splitlines()[-15:])
            pytest.fail(f"chromium exited with {proc.returncode}:\n{tail}")
        return proc

    def dump_dom(
        self,
        page: Path,
        fragment: str = "",
        *,
        budget_ms: int = 5000,
        size: tuple[int, int] = (1280, 1000),
    ) -> str:
        """The page's DOM after its scripts ran for ``budget_ms`` of virtual time."""
        proc = self.run(
            self.url(page, fragment),
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            "--dump-dom",
        )
        return proc.stdout

    def screenshot(
        self,
        page: Path,
        out: Path,
        *,
        fragment: str = "",
        size: tuple[int, int] = (1280, 1000),
        budget_ms: int = 5000,
    ) -> Path:
        """Save a PNG screenshot of the page at ``size`` (width, height) pixels."""
        out = Path(out).resolve()
        self.run(
            self.url(page, fragment),
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={out}",
        )
        if not out.is_file():
            pytest.fail(f"chromium wrote no screenshot at {out}")
        return out


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless Chromium; fails (never skips) when the browser is not installed."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(
            "chromium not found: install the Debian package 'chromium' "
            "(or set ZOOPREP_CHROMIUM to a Chrome/Chromium binary)"
        )
    return Chromium(binary=binary, workdir=tmp_path_factory.mktemp("chromium"))
