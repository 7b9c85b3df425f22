"""The web app on the public port: `/` is the single page, `/static/*` its assets (services/web/static), and
`/web-config.json` what the page needs to know about this deployment. Everything else stays the API's.

Every answer of the web app carries a strict Content-Security-Policy: scripts, styles, images and connections
only from this origin (no inline script, no CDN), camera allowed for the door page only by the user's consent.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow.responses import JsonResponse
from services.web import INDEX, STATIC_DIR

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
WEB_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> Response:
    # no-cache: a new release is picked up at the next visit; the assets are revalidated by ETag.
    return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/web-config.json")
async def web_config(request: Request) -> Response:
    """`tarjetas_de_prueba`: list the payment simulator's test cards on the checkout (the local set-up)."""
    return JsonResponse({"tarjetas_de_prueba": request.app.state.web_test_cards}, headers={"Cache-Control": "no-cache"})


class WebHeaders:
    """Adds WEB_HEADERS to every answer outside /api (the page, its assets, their 404s)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in WEB_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(self.headers)
            await send(message)

        await self.app(scope, receive, with_headers)


def mount(app: FastAPI, test_cards: bool) -> None:
    app.state.web_test_cards = test_cards
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(WebHeaders)
