"""Routes: the browser UI's pages (streams, live view, publish, people, events).

Each page is a small HTML shell: a nav bar with the user's name and logout, the page's markup,
and one JavaScript module from ``/static/js/`` that fills it from the REST API and WebSockets
(plain modules, no build step, nothing from a CDN). The shells live here rather than under
``/static``, which anyone may read, so that no page is ever served to someone not logged in:
each needs the ``require`` guard, and a request it refuses with 401 is redirected to
``/login?next=<the page>`` (403 gets an HTML page saying which role is needed).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from string import Template
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

from facewatch.web.auth import Principal, Role, login_redirect, require
from facewatch.web.errors import ApiError


class PageRoute(APIRoute):
    """An HTML page: 401 from its guard redirects to the login page, 403 explains in HTML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (HTTPException, ApiError) as exc:
                status = exc.status_code if isinstance(exc, HTTPException) else exc.status
                if status == 401:
                    return login_redirect(request)
                if status == 403:
                    message = exc.detail if isinstance(exc, HTTPException) else exc.message
                    return _forbidden(str(message))
                raise

        return page_handler


router = APIRouter(route_class=PageRoute, include_in_schema=False)
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]

_LAYOUT = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · facewatch</title>
<link rel="stylesheet" href="/static/css/app.css">
<script type="module" src="/static/js/$script"></script>
</head>
<body data-page="$page" data-user="$user" data-role="$role">
<header class="topbar">
  <a class="brand" href="/">facewatch</a>
  <nav class="pages">
    <a href="/" data-nav="streams">Streams</a>
    <a href="/publish" data-nav="publish" class="operator-only">Publish webcam</a>
    <a href="/people" data-nav="people">People</a>
    <a href="/events" data-nav="events">Events</a>
  </nav>
  <div class="who">
    <span id="user-name">$user</span> <span class="role">$role</span>
    <button id="logout" type="button" class="link">Log out</button>
  </div>
</header>
<main>
$body
</main>
</body>
</html>
""")

_STREAMS = """<h1>Streams</h1>
<form id="add-stream" class="card operator-only" autocomplete="off">
  <h2>Add a stream</h2>
  <div class="fields">
    <label>Name <input name="name" required maxlength="100" placeholder="Front door"></label>
    <label class="wide">URL <input name="url" required
      placeholder="rtsp://user:pass@camera/stream, https://…, or a file path"></label>
    <label>FPS cap <input name="fps_cap" type="number" min="0.1" step="0.1"></label>
    <label class="check"><input type="checkbox" name="loop"> Loop a file</label>
    <label class="check"><input type="checkbox" name="enabled" checked> Start now</label>
  </div>
  <button type="submit">Add stream</button>
  <p class="error" role="alert" hidden></p>
</form>
<table id="streams" class="list">
  <thead><tr><th>Stream</th><th>State</th><th>Input fps</th><th>Processed fps</th>
  <th>Dropped</th><th>Lag</th><th>Last error</th><th></th></tr></thead>
  <tbody></tbody>
</table>
<p id="streams-empty" class="empty" hidden>No streams yet.</p>
<p id="streams-error" class="error" role="alert" hidden></p>"""

_LIVE = Template("""<h1>Live: <span id="stream-name">$stream</span>
  <span id="stream-state" class="badge"></span></h1>
<div class="live-grid" data-stream="$stream">
  <div class="stage">
    <video id="video" autoplay muted playsinline></video>
    <canvas id="overlay"></canvas>
    <p id="video-status" class="status">Connecting…</p>
  </div>
  <aside class="feed">
    <h2>Alerts</h2>
    <ol id="alerts" class="alerts"></ol>
  </aside>
</div>
<ul id="overlay-faces" class="faces" aria-label="Faces in the frame shown"></ul>""")

_PUBLISH = """<h1>Publish your webcam</h1>
<form id="publish-form" class="card" autocomplete="off">
  <p>Your camera becomes a live stream of this server, recognised like any camera,
  for as long as this page stays open.</p>
  <div class="fields">
    <label>Stream name <input name="name" required maxlength="100" value="webcam"></label>
  </div>
  <button type="submit" id="publish-start">Start publishing</button>
  <button type="button" id="publish-stop" hidden>Stop</button>
  <p class="error" role="alert" hidden></p>
</form>
<div id="publish-live" class="live-grid" hidden>
  <div class="stage">
    <video id="video" autoplay muted playsinline></video>
    <canvas id="overlay"></canvas>
    <p id="video-status" class="status">Connecting…</p>
  </div>
  <aside class="feed">
    <h2>Alerts</h2>
    <p><a id="live-link" href="/">Open the live view</a></p>
    <ol id="alerts" class="alerts"></ol>
  </aside>
</div>
<ul id="overlay-faces" class="faces" aria-label="Faces in the frame shown"></ul>"""

_PEOPLE = """<h1>People</h1>
<form id="people-search" class="toolbar" role="search">
  <input type="search" name="search" placeholder="Search by name" aria-label="Search by name">
  <button type="submit">Search</button>
</form>
<table id="people" class="list">
  <thead><tr><th>Name</th><th>Age</th><th>Gender</th><th>Address</th><th>Photos</th>
  <th>Updated</th><th></th></tr></thead>
  <tbody></tbody>
</table>
<p id="people-empty" class="empty" hidden>Nobody found.</p>
<nav id="people-pager" class="pager">
  <button type="button" data-go="prev">Previous</button>
  <span class="where"></span>
  <button type="button" data-go="next">Next</button>
</nav>
<form id="enroll" class="card operator-only" autocomplete="off">
  <h2>Enroll a person</h2>
  <div class="fields">
    <label>Name <input name="name" required maxlength="200"></label>
    <label>Age <input name="age" type="number" min="0" max="150"></label>
    <label>Gender <input name="gender" maxlength="32"></label>
    <label class="wide">Address <input name="address" maxlength="500"></label>
    <label class="wide">Photos <input name="photos" type="file" accept="image/*" multiple
      required></label>
    <label class="check"><input type="checkbox" name="largest"> Use the largest face of
      group photos</label>
  </div>
  <button type="submit">Enroll</button>
  <p class="error" role="alert" hidden></p>
  <div class="result" aria-live="polite"></div>
</form>
<dialog id="person-dialog">
  <form id="person-form" method="dialog" autocomplete="off">
    <h2 class="title"></h2>
    <div class="fields">
      <label>Name <input name="name" required maxlength="200"></label>
      <label>Age <input name="age" type="number" min="0" max="150"></label>
      <label>Gender <input name="gender" maxlength="32"></label>
      <label class="wide">Address <input name="address" maxlength="500"></label>
    </div>
    <h3>Photos</h3>
    <div class="photos"></div>
    <label class="operator-only">Add photos
      <input name="more-photos" type="file" accept="image/*" multiple></label>
    <p class="error" role="alert" hidden></p>
    <div class="result" aria-live="polite"></div>
    <div class="actions">
      <button type="button" class="danger operator-only" data-act="delete">Delete person</button>
      <span class="spacer"></span>
      <button type="button" data-act="close">Close</button>
      <button type="submit" class="operator-only" data-act="save">Save</button>
    </div>
  </form>
</dialog>"""

_EVENTS = """<h1>Events</h1>
<form id="event-filters" class="filters card" autocomplete="off">
  <label>Stream <input name="stream" maxlength="64"></label>
  <label>Person id <input name="person_id" type="number" min="1"></label>
  <label>Type <select name="type">
    <option value="">any</option><option>match</option><option>update</option>
    <option>ended</option><option>unknown</option></select></label>
  <label>Since <input name="since" type="datetime-local"></label>
  <label>Until <input name="until" type="datetime-local"></label>
  <label>Per page <select name="limit"><option>25</option><option selected>50</option>
    <option>100</option></select></label>
  <button type="submit">Apply</button>
</form>
<table id="events" class="list">
  <thead><tr><th>Time</th><th>Type</th><th>Stream</th><th>Person</th><th>Similarity</th>
  <th>Snapshot</th></tr></thead>
  <tbody></tbody>
</table>
<p id="events-empty" class="empty" hidden>No events match.</p>
<p id="events-error" class="error" role="alert" hidden></p>
<nav class="pager">
  <button type="button" id="events-newest">Newest</button>
  <button type="button" id="events-older">Older</button>
</nav>"""


def _page(principal: Principal, *, page: str, title: str, script: str, body: str) -> HTMLResponse:
    text = _LAYOUT.substitute(
        title=html.escape(title),
        script=script,
        page=page,
        user=html.escape(principal.username),
        role=html.escape(str(principal.role)),
        body=body,
    )
    # Pages carry the user's name and must not outlive a logout in a shared cache.
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


def _forbidden(message: str) -> HTMLResponse:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Forbidden · '
        'facewatch</title><link rel="stylesheet" href="/static/css/app.css"></head>'
        f'<body><main><h1>Forbidden</h1><p class="error">{html.escape(message)}</p>'
        '<p><a href="/">Back to the streams</a></p></main></body></html>'
    )
    return HTMLResponse(text, status_code=403, headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
async def streams_page(principal: Viewer) -> HTMLResponse:
    """The streams with their live status; operators add, pause, resume and delete them."""
    return _page(principal, page="streams", title="Streams", script="streams.js", body=_STREAMS)


@router.get("/live/{stream_id}", response_class=HTMLResponse)
async def live_page(stream_id: str, principal: Viewer) -> HTMLResponse:
    """A stream's live video with its faces drawn over it, and its alerts."""
    body = _LIVE.substitute(stream=html.escape(stream_id))
    return _page(principal, page="live", title=f"Live: {stream_id}", script="live.js", body=body)


@router.get("/publish", response_class=HTMLResponse)
async def publish_page(principal: Operator) -> HTMLResponse:
    """Publish this browser's webcam as a new stream and watch it recognised."""
    return _page(
        principal, page="publish", title="Publish webcam", script="publish.js", body=_PUBLISH
    )


@router.get("/people", response_class=HTMLResponse)
async def people_page(principal: Viewer) -> HTMLResponse:
    """The watchlist's people; operators enroll, edit and delete them and their photos."""
    return _page(principal, page="people", title="People", script="people.js", body=_PEOPLE)


@router.get("/events", response_class=HTMLResponse)
async def events_page(principal: Viewer) -> HTMLResponse:
    """The alert history, filtered and paged, with snapshots."""
    return _page(principal, page="events", title="Events", script="events.js", body=_EVENTS)
