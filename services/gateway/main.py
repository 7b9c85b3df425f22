"""`python -m services.gateway.main [--host H] [--port P]`"""

from __future__ import annotations

import argparse

import uvicorn

from eventflow.logs import configure_logging
from services.gateway.bootstrap import create_app
from services.gateway.config import GatewaySettings


def main() -> None:
    parser = argparse.ArgumentParser(description="EventFlow gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()
