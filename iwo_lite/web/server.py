"""The dashboard's HTTP server: routes, the access token, the rules every request passes, the live feed.

Owns the aiohttp application (one asyncio process: `iwo-lite web`, or the daemon with
`[web] enabled`), the token (random, in `<home>/web-token`, 0600, the same across restarts), and
what every request must pass: the token (`Authorization: Bearer`, or the cookie the `?token=`
URL sets), no change on a GET, no POST from another origin (CSRF), JSON bodies only, and a
Content-Security-Policy that lets only the page's own script and style run. The live feed
(`/api/stream`, Server-Sent Events) tells open pages that something changed; they fetch again.
Reads go to web/data.py and writes to web/actions.py, each in a thread. Imports no DBOS.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hmac
import ipaddress
import logging
import os
import secrets
import signal
import sys
from importlib import resources
from pathlib import Path

from aiohttp import web

from iwo_lite.config import Config
from iwo_lite.errors import UserError, first_line
from iwo_lite.home import Home
from iwo_lite.numbers import json_text
from iwo_lite.times import iso_utc
from iwo_lite.web import actions, data

log = logging.getLogger("iwo_lite.web")
COOKIE = "iwo_token"
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
WATCH_S = 0.25  # how often the live feed looks for a change (a stat on SQLite)
WATCH_PG_S = 0.5  # on Postgres (one small query)
KEEPALIVE_S = 15.0
FLAG_VALUES = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}  # ?stat=
MAX_BODY = 4 * 1024 * 1024  # a spec is at most 1 MiB; JSON may escape it to a few times that
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def token_path(config: Config) -> Path:
    return Home(config.home).root / "web-token"


def load_token(config: Config) -> str:
    """The home's access token: made once (random, 0600, never rewritten), then read."""
    path = token_path(config)
    Home(config.home).create()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text().strip()
        if len(text) < 16:
            raise UserError(f"{path}: not a token (delete it: a new one is made)")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return text
    token = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/?token={token}"


# -- the rules every request passes ---------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json_text({"error": first_line(message)}) + "\n",
                        content_type="application/json")


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


def _same_origin(request: web.Request) -> bool:
    """A POST is the page's own (or a script's, which sends no Origin), never another site's form or fetch."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"{request.scheme}://{request.host}"
    site = request.headers.get("Sec-Fetch-Site")
    return site in (None, "same-origin", "none")


@web.middleware
async def guard(request: web.Request, handler):
    token = request.app["token"]
    path = request.path
    if path.startswith("/static/") or path == "/favicon.ico":
        response = await handler(request)
    elif request.method == "GET" and request.query.get("token") is not None and not path.startswith("/api/"):
        # the URL `iwo-lite web` printed: the token becomes a cookie, and leaves the address bar
        if not hmac.compare_digest(request.query["token"].encode(), token.encode()):
            response = _unauthorized(request)
        else:
            response = web.HTTPSeeOther(location=path)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    elif not hmac.compare_digest((_presented_token(request) or "").encode(), token.encode()):
        response = _unauthorized(request)
    elif request.method not in ("GET", "HEAD") and not _same_origin(request):
        response = _error(403, "a request from another origin is refused (CSRF)")
    elif request.method == "POST" and request.content_type != "application/json":
        response = _error(400, "body: expected JSON (Content-Type: application/json)")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if error.status >= 400 and path.startswith("/api/"):
                response = _error(error.status, error.reason)
            else:
                raise
    response.headers.update(SECURITY_HEADERS)
    return response


def _unauthorized(request: web.Request) -> web.Response:
    if request.path.startswith("/api/"):
        return _error(401, "the access token is missing or wrong: send Authorization: Bearer TOKEN"
                           " (the token is in <home>/web-token)")
    return web.Response(status=401, content_type="text/plain",
                        text="iwo-lite: open the URL `iwo-lite web` printed (it carries the access token: ?token=...)\n")


# -- pages and static files -----------------------------------------------------------------------


def _static(name: str) -> bytes:
    return resources.files("iwo_lite.web").joinpath("static", name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})


# -- the JSON API ----------------------------------------------------------------------------------


async def _read(request: web.Request, function, *args):
    """Run a data.* read in a thread; an unknown id is 404, other bad input 400."""
    try:
        return await asyncio.to_thread(function, request.app["config"], *args)
    except data.NotFound as error:
        raise _Refused(404, str(error)) from None
    except UserError as error:
        raise _Refused(400, str(error)) from None


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _json(value, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json_text(value), content_type="application/json")


def _whole(name: str, raw: str) -> int:
    """A dispatch or attempt number from the URL (its path or query), or a 400 naming it."""
    if not (raw.isascii() and raw.isdigit()):  # "²" is a digit to isdigit, not to int
        raise _Refused(400, f"{name}: expected a whole number (0 or more), got {raw[:40]!r}")
    return int(raw)


def _number(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    return None if raw in (None, "") else _whole(name, raw)


def _flag(request: web.Request, name: str) -> bool:
    raw = (request.query.get(name) or "").lower()
    if raw not in FLAG_VALUES:
        raise _Refused(400, f"{name}: expected 1 / true / yes or 0 / false / no, got {raw[:40]!r}")
    return FLAG_VALUES[raw]


def _since(request: web.Request) -> str | None:
    """`?since=`: any ISO 8601 time (no zone = UTC), as the database writes times, so that they compare."""
    raw = request.query.get("since")
    if raw in (None, ""):
        return None
    try:
        moment = _dt.datetime.fromisoformat(raw)
    except ValueError:
        raise _Refused(400, "since: expected an ISO 8601 time such as 2026-12-05T12:00:00Z, "
                            f"got {raw[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return iso_utc(moment.timestamp())


def api(handler):
    """An API handler: _Refused and ActionError become one-line JSON errors, and so does anything
    unforeseen (a 500 naming only the exception's type; the traceback goes to the log)."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except (_Refused, actions.ActionError) as error:
            return _error(error.status, str(error))
        except web.HTTPException:
            raise
        except Exception as error:
            log.exception("web: %s %s failed", request.method, request.path)
            return _error(500, f"{request.path}: failed ({type(error).__name__}); the server's log has the details")

    return wrapped


@api
async def api_specs(request: web.Request) -> web.Response:
    return _json(await _read(request, data.specs, _since(request)))


@api
async def api_board(request: web.Request) -> web.Response:
    return _json(await _read(request, data.board, _since(request)))


@api
async def api_spec(request: web.Request) -> web.Response:
    return _json(await _read(request, data.spec, request.match_info["id"]))


@api
async def api_diff(request: web.Request) -> web.Response:
    text = await _read(request, data.diff, request.match_info["id"], _number(request, "dispatch"),
                       _flag(request, "stat"))
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


@api
async def api_events(request: web.Request) -> web.Response:
    return _json(await _read(request, data.events, request.match_info["id"], _number(request, "dispatch"),
                             _number(request, "attempt")))


@api
async def api_dispatch(request: web.Request) -> web.Response:
    step = _whole("dispatch", request.match_info["nn"])
    return _json(await _read(request, data.dispatch, request.match_info["id"], step))


@api
async def api_costs(request: web.Request) -> web.Response:
    return _json(await _read(request, data.costs))


@api
async def api_daemon(request: web.Request) -> web.Response:
    return _json(await _read(request, data.daemon))


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "body: not valid JSON") from None
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _Refused(400, f"body: expected a JSON object, got {type(body).__name__}")
    return body


@api
async def api_submit(request: web.Request) -> web.Response:
    body = await _body(request)
    result = await asyncio.to_thread(actions.submit, request.app["config"], body)
    request.app["watcher"].nudge()
    return _json(result)


@api
async def api_action(request: web.Request) -> web.Response:
    body = await _body(request)
    result = await asyncio.to_thread(actions.act, request.app["config"], request.match_info["id"],
                                     request.match_info["action"], body)
    request.app["watcher"].nudge()
    return _json(result)


async def api_unknown(request: web.Request) -> web.Response:
    return _error(404, f"{request.path}: no such API (see the README's \"Web dashboard\")")


# -- the live feed ---------------------------------------------------------------------------------


class Watcher:
    """Looks for a change (data.fingerprint) while at least one page listens, and tells every listener."""

    def __init__(self, config: Config):
        self.config = config
        self.listeners: set[asyncio.Queue] = set()
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()

    def listen(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.listeners.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._watch(), name="iwo-web-watch")
        return queue

    def leave(self, queue: asyncio.Queue) -> None:
        self.listeners.discard(queue)

    def nudge(self) -> None:
        self.wake.set()

    async def _look(self):
        if self.config.db_path is not None:
            return data.fingerprint(self.config)  # two stats and a lock probe: no thread needed
        return await asyncio.to_thread(data.fingerprint, self.config)

    async def _watch(self) -> None:
        interval = WATCH_S if self.config.db_path is not None else WATCH_PG_S
        last = None
        while self.listeners:
            try:
                mark = await self._look()
            except Exception as error:  # the database being made, moved, or down: say so, keep looking
                mark = ("error", first_line(error))
            if mark != last:
                if last is not None:
                    for queue in list(self.listeners):
                        if queue.empty():
                            queue.put_nowait(True)
                last = mark
            try:
                await asyncio.wait_for(self.wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def stop(self) -> None:
        self.listeners.clear()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `change` when anything shown may have changed, a comment every 15 s."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           **SECURITY_HEADERS})
    await response.prepare(request)
    watcher: Watcher = request.app["watcher"]
    queue = watcher.listen()
    try:
        await response.write(b"retry: 1000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                await response.write(b"event: change\ndata: {}\n\n")
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        watcher.leave(queue)
    return response


# -- the application -------------------------------------------------------------------------------


def make_app(config: Config, token: str) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app["config"] = config
    app["token"] = token
    app["watcher"] = Watcher(config)
    app.router.add_get("/", page)
    app.router.add_get("/spec/{id}", page)
    app.router.add_get("/costs", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/specs", api_specs)
    app.router.add_post("/api/specs", api_submit)
    app.router.add_get("/api/board", api_board)
    app.router.add_get("/api/costs", api_costs)
    app.router.add_get("/api/daemon", api_daemon)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/specs/{id}", api_spec)
    app.router.add_get("/api/specs/{id}/diff", api_diff)
    app.router.add_get("/api/specs/{id}/events", api_events)
    app.router.add_get("/api/specs/{id}/dispatches/{nn}", api_dispatch)
    app.router.add_post("/api/specs/{id}/{action}", api_action)
    app.router.add_route("*", "/api/{tail:.*}", api_unknown)

    async def stop_watching(app: web.Application) -> None:
        await app["watcher"].stop()

    app.on_shutdown.append(stop_watching)
    return app


async def start(config: Config, host: str | None = None, port: int | None = None) -> tuple[web.AppRunner, str]:
    """Serve the dashboard in this event loop; (the runner to clean up, the URL with the token).
    UserError (one line) when the address cannot be bound."""
    host = host if host is not None else config.web.host
    port = port if port is not None else config.web.port
    token = await asyncio.to_thread(load_token, config)
    runner = web.AppRunner(make_app(config, token), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        why = "is in use" if error.errno in (98, 48) else f"cannot be used: {error.strerror or error}"
        raise UserError(f"web: {host}:{port} {why} (--port, --host, [web] port; --port 0 picks a free port)") from None
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    if not is_loopback(host):
        log.warning("web: listening on %s, not only this machine: anyone who can reach it and has the token can "
                    "act on your specs (use 127.0.0.1 and an SSH tunnel)", host)
        print(f"iwo-lite: warning: the dashboard listens on {host}, reachable from other machines; every request"
              " still needs the token", file=sys.stderr)
    return runner, url_of(host, bound, token)


async def serve(config: Config, host: str | None = None, port: int | None = None) -> None:
    """`iwo-lite web`: serve until SIGINT / SIGTERM; the first line on stdout is the URL to open."""
    runner, url = await start(config, host, port)
    print(url, flush=True)
    print("the dashboard of " + str(config.home) + " (Ctrl-C stops it)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def companion(config: Config, stop: asyncio.Event) -> None:
    """The daemon's web server ([web] enabled): serves until `stop`; a port that cannot be bound is
    logged and leaves the daemon working."""
    try:
        runner, url = await start(config)
    except UserError as error:
        log.error("%s: the daemon goes on without the dashboard", error)
        return
    print(url, flush=True)
    log.info("dashboard at %s", url.split("?")[0])
    try:
        await stop.wait()
    finally:
        await runner.cleanup()

