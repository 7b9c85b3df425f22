"""`python -m services.users.main [--host H] [--port P]`: the users service on port 8001."""

from __future__ import annotations

from eventflow.config import Settings
from eventflow.web import serve
from services.users.bootstrap import create_app


def main() -> None:
    serve("users", 8001, create_app, Settings)


if __name__ == "__main__":
    main()
