"""The web app: plain HTML, CSS and JavaScript in `static/`, served by the gateway at `/` (no build step).

Nothing here runs on the server: the pages call the public API under /api with the signed-in user's token.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = STATIC_DIR / "index.html"
