"""What the suite needs besides Python, Java and Maven, installed by `make test` before pytest
starts, so that no fixture installs anything (nor spends its test's pytest-timeout doing so):

- Node.js 20+ with npm, and the AI SDK test's npm packages (tests/gateway/aisdk), installed with
  ``npm ci`` whenever its package-lock.json differs from the one node_modules was installed from;
- Debian's Chromium at /usr/bin/chromium (the browser tests), installed with apt-get when missing
  and this runs as root with apt-get; otherwise one error that names the package.

``python -m tests.prereqs`` installs (exit 1 with that error when it cannot); the fixtures call
``require_node_packages`` and ``require_chromium``, which only check and say how to fix it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

AISDK = Path(__file__).resolve().parent / "gateway" / "aisdk"
LOCKFILE = AISDK / "package-lock.json"
STAMP = AISDK / "node_modules" / ".tokenlog-lock-sha256"
"""The hash of the package.json and package-lock.json that node_modules was installed from."""
NODE_MAJOR = 20
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_PACKAGE = "chromium"
FIX = "run `make test-deps` (python -m tests.prereqs)"


class MissingPrerequisiteError(Exception):
    """Something the suite needs is not there and cannot be installed from here."""


def lock_hash() -> str:
    """What node_modules must have been installed from."""
    digest = hashlib.sha256()
    for path in (AISDK / "package.json", LOCKFILE):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def node() -> str:
    """Node.js, version 20 or newer."""
    found = shutil.which("node")
    if found is None:
        raise MissingPrerequisiteError(f"Node.js {NODE_MAJOR}+ is needed (the AI SDK tests) and not on PATH")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout
    major = re.match(r"v(\d+)\.", version.strip())
    if major is None or int(major.group(1)) < NODE_MAJOR:
        raise MissingPrerequisiteError(f"Node.js {NODE_MAJOR}+ is needed; {found} is {version.strip()}")
    return found


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        raise MissingPrerequisiteError(
            "npm is needed (the AI SDK tests install `ai` with it) and not on PATH"
        )
    return found


def node_packages_current() -> bool:
    return STAMP.exists() and STAMP.read_text().strip() == lock_hash()


def install_node_packages() -> bool:
    """``npm ci`` unless node_modules came from this lockfile; whether it installed."""
    node()
    if node_packages_current():
        return False
    subprocess.run([npm(), "ci", "--no-audit", "--no-fund", "--silent"], cwd=AISDK, check=True)
    STAMP.write_text(lock_hash() + "\n")  # after `npm ci`, which empties node_modules first
    return True


def install_chromium() -> bool:
    """Debian's Chromium with apt-get when missing; whether it installed."""
    if CHROMIUM.exists():
        return False
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise MissingPrerequisiteError(
            f"Debian's {CHROMIUM_PACKAGE} package is needed at {CHROMIUM} (the browser tests); install it "
            f"(apt-get install {CHROMIUM_PACKAGE}) or run this as root on a machine with apt-get"
        )
    print(f"[tokenlog] installing {CHROMIUM_PACKAGE} with apt-get", flush=True)
    install = [apt, "install", "-y", "-q", CHROMIUM_PACKAGE]
    if _apt(install).returncode != 0:  # stale package lists: update them once and try again
        _apt([apt, "update", "-q"])
        done = _apt(install)
        if done.returncode != 0:
            raise MissingPrerequisiteError(
                f"apt-get could not install {CHROMIUM_PACKAGE}:\n{done.stdout[-2000:]}"
            )
    if not CHROMIUM.exists():
        raise MissingPrerequisiteError(f"apt-get installed {CHROMIUM_PACKAGE} but {CHROMIUM} is not there")
    return True


def _apt(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """apt-get, non-interactive, its output kept for the error message."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


def require_node_packages() -> str:
    """Node, with node_modules installed from the current lockfile (checks, never installs)."""
    found = node()
    if not node_packages_current():
        raise MissingPrerequisiteError(
            f"{AISDK}/node_modules is missing or not from package-lock.json: {FIX}"
        )
    return found


def require_chromium() -> str:
    """Debian's Chromium (checks, never installs)."""
    if not CHROMIUM.exists():
        raise MissingPrerequisiteError(f"Debian's {CHROMIUM_PACKAGE} is not installed at {CHROMIUM}: {FIX}")
    return str(CHROMIUM)


def main() -> int:
    try:
        node_done = install_node_packages()
        chromium_done = install_chromium()
    except MissingPrerequisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"[tokenlog] test prerequisites: node {'installed' if node_done else 'up to date'} "
        f"({AISDK}/node_modules), "
        f"chromium {'installed' if chromium_done else 'present'} ({CHROMIUM})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
