"""Servers the tests start on loopback: a free port, a server process run until ready, and a
scriptable OpenAI-compatible model server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(cmd, ready_url, log_path, *, env=None, stop=signal.SIGTERM, timeout=300):
    """Run a server command in its own process group until ``ready_url`` answers 200 (the log
    goes to ``log_path``); on exit, stop the whole group with ``stop`` (SIGKILL after 30 s)."""
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}: {Path(log_path).read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet, or not ready (an HTTP error status)
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{ready_url} not ready after {timeout} s: {Path(log_path).read_text()[-4000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, stop)
            proc.wait(timeout=30)
        except ProcessLookupError:  # the group is gone already (the server exited on its own)
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


DROP = object()
"""What a :func:`json_server` answer function returns to drop the connection mid-request."""


@contextmanager
def json_server(answer):
    """A loopback HTTP server for scripted JSON APIs; yields its base URL. ``answer(body,
    headers)`` gets each POST's JSON body and headers and returns ``(status, payload)``
    (payload: JSON-able or bytes) or :data:`DROP`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result = answer(body, dict(self.headers))
            if result is DROP:
                self.connection.close()
                return
            status, payload = result
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class ModelServer:
    """An OpenAI-compatible loopback server that answers yes/no log-probabilities from a hash
    of the prompt; after ``die_after`` requests it drops the connection and stops listening.
    With ``api_key`` it refuses other keys with 401 and, like some real servers, echoes the
    key it was sent in the error message.
    """

    def __init__(self, port, die_after=None, api_key=None):
        self.port, self.die_after, self.api_key, self.requests = port, die_after, api_key, 0
        self.lock = threading.Lock()
        self.httpd = None

    def answer(self, body):
        text = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
        yes = -int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) / 9000.0
        top = [{"token": "yes", "logprob": yes}, {"token": "no", "logprob": -1.0}]
        return {
            "choices": [{"message": {"content": "yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": 1},
        }

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    dying = server.die_after is not None and server.requests > server.die_after
                if dying:
                    self.close_connection = True
                    self.connection.close()
                    threading.Thread(target=server.stop, daemon=True).start()
                    return
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if server.api_key is not None and sent != server.api_key:
                    answer, status = {"error": {"message": f"invalid API key {sent!r}"}}, 401
                else:
                    answer, status = server.answer(body), 200
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd is not None:
            httpd, self.httpd = self.httpd, None
            httpd.shutdown()
            httpd.server_close()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition (parsed by prometheus-client),
    or ``None`` when the sample is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
