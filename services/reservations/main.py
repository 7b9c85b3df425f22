"""`python -m services.reservations.main [--host H] [--port P]`: the reservations service on port 8003."""

from __future__ import annotations

import argparse

import uvicorn

from eventflow.config import Settings
from eventflow.logs import configure_logging
from services.reservations.bootstrap import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="EventFlow reservations service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    settings = Settings()
    configure_logging("reservations", settings.log_level)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()
