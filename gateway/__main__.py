"""``python -m gateway``: the gateway with settings from the environment (``gateway/settings.py``)."""

from gateway.server import main

main()
