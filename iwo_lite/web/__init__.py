"""The dashboard: a live web page and its JSON API over the same reads as `status`, `diff` and `logs`.

server.py   the aiohttp application: routes, the access token, CSRF and headers, the live feed
data.py     what the page and API read (read-only; the same queries as the shell)
actions.py  what they change, through the same paths as the shell commands
static/     the page itself: index.html, app.js, style.css (no build step, nothing from a CDN)

Imports no DBOS: `iwo-lite web` runs beside a daemon or without one; with `[web] enabled` the
daemon serves the same application in its own event loop.
"""
