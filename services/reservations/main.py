"""`python -m services.reservations.main [--host H] [--port P]`: the reservations service on port 8003."""

from __future__ import annotations

from eventflow.config import Settings
from eventflow.web import serve
from services.reservations.bootstrap import create_app


def main() -> None:
    serve("reservations", 8003, create_app, Settings)


if __name__ == "__main__":
    main()
