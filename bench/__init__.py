"""Benchmarks (``make bench``): each compares within one run, against a floor measured in it."""

import os as _os
import secrets as _secrets

SERVICE_TOKEN = _os.environ.setdefault("TOKENLOG_SERVICE_TOKEN", _secrets.token_urlsafe(48))
"""The service credential of the session apps and gateways a benchmark starts (they inherit it)."""
SERVICE_HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
