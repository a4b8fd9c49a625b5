"""The workshop's web server: textual-serve's page, terminal and process per visitor, with a door in front.

textual-serve (a dependency) brings the page, xterm.js, the websocket protocol and AppService, which runs one
studio process per websocket. Added here: the token (page, websocket and static files; compared in constant
time), the cap (the next visitor gets a "full" page, not a process), each visitor's folder and share of the
cores (passed to their studio's environment), a process that outlives its tab is killed, and no directory
listing (textual-serve lists /static/ by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import shlex
import sys
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from studio.paths import VISITOR_ENV
from studio.tui.serve.sessions import Sessions, is_visitor, new_visitor
from studio.cpu_threads import CPU_SHARE_ENV

log = logging.getLogger("studio-serve")
EXIT_GRACE_S = 15.0  # a studio asked to quit saves a running trainer's checkpoint first (StudioApp waits up to 10 s)
VISITOR_COOKIE_DAYS = 2  # a reload within a workshop finds the visitor's runs again


class StudioAppService(AppService):
    """textual-serve's process for one websocket, made sure to end: killed when it has not quit EXIT_GRACE_S after."""

    async def stop(self) -> None:
        process = self._process
        quitting = asyncio.ensure_future(self._quit(process))
        done, _ = await asyncio.wait({quitting}, timeout=EXIT_GRACE_S)  # not wait_for: textual-serve swallows a cancel
        if not done:
            log.warning("a studio did not quit within %.0f s: killing it", EXIT_GRACE_S)
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                process.kill()
        await quitting  # once killed, its output ends and so does textual-serve's reader

    async def _quit(self, process) -> None:
        await super().stop()  # textual-serve's quit: the studio saves a running trainer's checkpoint, then exits
        if process is not None:
            await process.wait()


class StudioServer(Server):
    def __init__(self, *, host: str, port: int, sessions: Sessions, token: str | None, room_url: str):
        super().__init__(command=f"{sys.executable} -m studio", host=host, port=port, title="SFT Studio")
        self.sessions = sessions
        self.token = token
        self.room_url = room_url
        self.token_cookie = f"studio-token-{port}"
        self.visitor_cookie = f"studio-visitor-{port}"
        self.services: set[StudioAppService] = set()
        self._endings: set[asyncio.Future] = set()  # studios being stopped (held here: the loop keeps weak references)

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.require_token])
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path))
        app.add_routes(
            [
                web.get("/", self.handle_index, name="index"),
                web.get("/ws", self.handle_websocket, name="websocket"),
                web.static("/static", self.statics_path, name="static"),  # show_index off; no path leaves the folder
            ]
        )
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        return app

    # ── the door ──────────────────────────────────────────────────────────
    @web.middleware
    async def require_token(self, request: web.Request, handler):
        """Every request shows the token: in the URL (the link handed out) or in the cookie the page set."""
        if self.token is not None:
            given = request.query.get("token", request.cookies.get(self.token_cookie, ""))
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                reason = "is wrong" if given else "is missing"
                return page(403, "Not invited", f"The link's token {reason}. Ask the presenter for the studio's link.")
        return await handler(request)

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.full:
            return self.full_page()
        origin = str(request.url.origin())
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": "ws" + origin.removeprefix("http") + "/ws",  # the host the visitor reached
            "config": {"static": {"url": origin + "/static/"}},
            "application": {"name": self.title},
        }
        response = aiohttp_jinja2.render_template("app_index.html", request, context)
        response.headers["Cache-Control"] = "no-store"  # the next load must ask again: it may be full by then
        if self.token is not None:
            response.set_cookie(self.token_cookie, self.token, httponly=True, samesite="Strict")
        if not is_visitor(request.cookies.get(self.visitor_cookie)):
            max_age = VISITOR_COOKIE_DAYS * 86400
            response.set_cookie(self.visitor_cookie, new_visitor(), max_age=max_age, httponly=True, samesite="Strict")
        return response

    def full_page(self) -> web.Response:
        sessions = self.sessions
        return page(
            503,
            "The studio is full",
            f"{sessions.live} of {sessions.cap} visitors are in. Reload this page when someone has left.",
        )

    # ── a studio per websocket ────────────────────────────────────────────
    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.sessions.enter():  # filled up between this visitor's page and their websocket
            return self.full_page()
        websocket = web.WebSocketResponse(heartbeat=15)
        visitor = request.cookies.get(self.visitor_cookie)
        if not is_visitor(visitor):
            visitor = new_visitor()  # not a browser that loaded the page: a folder of its own all the same
        service: StudioAppService | None = None
        try:
            await websocket.prepare(request)
            service = StudioAppService(
                self.studio_command(visitor),
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=websocket.close,
                download_manager=self.download_manager,
                debug=self.debug,
            )
            self.services.add(service)
            await service.start(to_int(request.query.get("width", "80"), 80), to_int(request.query.get("height", "24"), 24))
            await self._process_messages(websocket, service)
        except Exception as error:  # a broken browser message: that visitor's studio ends, the room goes on
            log.exception("a visitor's studio failed: %s", error)
        finally:
            # aiohttp cancels the handler of a closed connection: the studio's end must not be cancelled with it
            ending = asyncio.ensure_future(self._end(service))
            self._endings.add(ending)
            ending.add_done_callback(self._endings.discard)
            await asyncio.shield(ending)
        return websocket

    async def _end(self, service: StudioAppService | None) -> None:
        """Stop the visitor's studio (killed when it will not quit), then free their place."""
        try:
            if service is not None:
                await service.stop()
                self.services.discard(service)
        finally:
            self.sessions.leave()

    def studio_command(self, visitor: str) -> str:
        """The visitor's studio: exec'd by the shell, so that the process textual-serve holds is the studio itself."""
        environment = [f"{VISITOR_ENV}={visitor}", f"{CPU_SHARE_ENV}={self.sessions.share_file}"]
        return shlex.join(["exec", "env", *environment, sys.executable, "-m", "studio"])

    # ── start and stop ────────────────────────────────────────────────────
    async def on_startup(self, app: web.Application) -> None:
        self.console.print(f"SFT Studio for the room: [bold]{self.room_url}[/]", highlight=False, soft_wrap=True)
        self.console.print("Press Ctrl+C to stop (every visitor's studio stops with it).", highlight=False)

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(service.stop() for service in list(self.services)), *list(self._endings))


def room_url(host: str, port: int, token: str | None) -> str:
    """The link to hand out: with the token when one is needed."""
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    return f"{base}?token={quote(token, safe='')}" if token is not None else base


def page(status: int, title: str, message: str) -> web.Response:
    """A page of the studio's own (refused, full), in the colours of textual-serve's."""
    title, message = html.escape(title), html.escape(message)
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>SFT Studio: {title}</title></head>"
        "<body style='background:#0c181f;color:#f0f0f0;font-family:monospace;padding:3em'>"
        f"<h1>SFT Studio: {title}</h1><p id='message'>{message}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")
