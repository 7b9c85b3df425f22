"""`python -m services.events.main [--host H] [--port P]`: the events service on port 8002."""

from __future__ import annotations

from eventflow.config import Settings
from eventflow.web import serve
from services.events.bootstrap import create_app


def main() -> None:
    serve("events", 8002, create_app, Settings)


if __name__ == "__main__":
    main()
