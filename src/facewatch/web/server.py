"""uvicorn's server with facewatch's shutdown order.

uvicorn closes every open connection (WebSockets with 1012, "service restart") before it runs the
app's lifespan shutdown. Alert subscribers are told 1001 ("going away") first, as STYLE.md's
shutdown order asks, so a client knows the server is stopping rather than restarting a worker.
"""

from __future__ import annotations

import socket

import uvicorn

from facewatch.web.routes.alerts_ws import close_alert_sockets


class FacewatchServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        services = getattr(getattr(app, "state", None), "services", None)
        if services is not None:
            await close_alert_sockets(services)
        await super().shutdown(sockets)
