"""`python -m services.gateway.main [--host H] [--port P]`: the gateway service on port 8080."""

from __future__ import annotations

from eventflow.web import serve
from services.gateway.bootstrap import create_app
from services.gateway.config import GatewaySettings


def main() -> None:
    serve("gateway", 8080, create_app, GatewaySettings)


if __name__ == "__main__":
    main()
