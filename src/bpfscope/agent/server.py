"""The agent's HTTP server: /healthz answers from what the agent already knows about its sources (no map
is read), and every other path serves the registry's metrics, as prometheus_client's own server does.

Probes hit /healthz every few seconds, so it must stay cheap; a scrape of /metrics reads every map."""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HEALTH_PATH", "serve_http"]

HEALTH_PATH = "/healthz"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # A slow scrape must not hold up a probe; daemon threads are not gathered for joining at close.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per probe and scrape would bury the agent's own log


def _app(registry: CollectorRegistry, unhealthy: Callable[[], list[str]]) -> WSGIApplication:
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        failed = unhealthy()
        body = (f"unhealthy: {'; '.join(failed)}\n" if failed else "ok\n").encode()
        start_response("503 Service Unavailable" if failed else "200 OK",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_http(host: str, port: int, registry: CollectorRegistry, unhealthy: Callable[[], list[str]]) -> WSGIServer:
    """Serves on host:port (IPv4 or IPv6) from a daemon thread; `unhealthy()` names what is wrong, [] when
    nothing is. Stop it with shutdown() and server_close()."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
    server: WSGIServer = make_server(host, port, _app(registry, unhealthy), server_class, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="bpfscope-agent-http", daemon=True).start()
    return server
