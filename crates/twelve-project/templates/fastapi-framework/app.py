"""{{name}}: a hello-world FastAPI application, serving Prometheus metrics where the
12-factor charm scrapes them (METRICS_PATH on METRICS_PORT, the app's port by default)."""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()
_requests = 0
_lock = threading.Lock()


def metrics_text() -> str:
    """The app's series in Prometheus' text format."""
    return (
        "# HELP app_requests_total HTTP requests served.\n"
        "# TYPE app_requests_total counter\n"
        f"app_requests_total {_requests}\n"
    )


@app.middleware("http")
async def count_requests(request: Request, call_next):
    global _requests
    with _lock:
        _requests += 1
    return await call_next(request)


@app.get("/", response_class=PlainTextResponse)
async def root():
    return "Hello, world!\n"


_port = os.environ.get("UVICORN_PORT", "8000")
_metrics_port = os.environ.get("METRICS_PORT", _port)
_metrics_path = os.environ.get("METRICS_PATH", "/metrics")


async def metrics():
    return PlainTextResponse(metrics_text(), media_type="text/plain; version=0.0.4")


if _metrics_port == _port:
    app.add_api_route(_metrics_path, metrics, methods=["GET"])
else:
    # The charm's metrics-port: the metrics on a port of their own.
    class _Metrics(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != _metrics_path:
                self.send_error(404)
                return
            body = metrics_text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        _server = ThreadingHTTPServer(("", int(_metrics_port)), _Metrics)
        threading.Thread(target=_server.serve_forever, daemon=True).start()
    except OSError:
        pass  # another worker of this unit serves them
