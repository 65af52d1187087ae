"""uvicorn's server with facewatch's shutdown order.

uvicorn closes every open connection (WebSockets with 1012, "service restart") before it runs the
app's lifespan shutdown. Alert subscribers and live views (their metadata sockets and WebRTC
peers) are told 1001 ("going away") first, as STYLE.md's shutdown order asks, so a client knows
the server is stopping rather than restarting a worker.
"""

from __future__ import annotations

import socket

import uvicorn

from facewatch.web.live_view import EXTRAS_KEY as LIVE_VIEWS_KEY
from facewatch.web.live_view import LiveViews
from facewatch.web.routes.alerts_ws import close_alert_sockets


class FacewatchServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        services = getattr(getattr(app, "state", None), "services", None)
        if services is not None:
            await close_alert_sockets(services)
            live_views = services.extras.get(LIVE_VIEWS_KEY)
            if isinstance(live_views, LiveViews):
                await live_views.close_all()
        await super().shutdown(sockets)
