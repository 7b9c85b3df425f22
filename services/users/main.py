"""Entry point: `python -m services.users.main [--host H] [--port P]`."""

from __future__ import annotations

import argparse

import uvicorn

from eventflow.config import Settings
from eventflow.logs import configure_logging
from services.users.bootstrap import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="EventFlow users service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings()
    configure_logging("users", settings.log_level)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()
