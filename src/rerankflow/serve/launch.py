"""``rerankflow serve``: build a job's pipelines and run the HTTP server on them."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import BackendError, ConfigError, MissingDependencyError
from ..pipelines.job import Job, ServeSpec
from ..pipelines.runner import build_job
from ..yamlio import validation_to_config_error
from .served import ServedPipeline, serve_pipelines

log = logging.getLogger(__name__)


def job_pipelines_to_serve(job: Job, base_dir: Path, names: Sequence[str] | None = None) -> dict[str, ServedPipeline]:
    """The job's pipelines that can answer requests.

    Named pipelines (``names``, else ``serve.pipelines``) must each chat or rerank; without
    names, every pipeline that can is served and the others are listed in the log.
    """
    chosen = list(names or job.serve.pipelines or [])
    unknown = [n for n in chosen if n not in job.pipelines]
    if unknown:
        raise ConfigError(f"no pipeline named {', '.join(unknown)}; the job has: {', '.join(job.pipelines)}")
    _, built = build_job(job, base_dir)
    served = serve_pipelines(built, chosen)
    idle = [n for n, p in served.items() if not (p.chats or p.reranks)]
    reason = (
        "retrieval only; a served pipeline either ends in 'generate' (chat) or has no retriever "
        "and reranks the documents a request sends"
    )
    if chosen and idle:
        raise ConfigError(f"cannot serve {', '.join(idle)}: {reason}", path=("serve", "pipelines"))
    if idle:
        log.info("not serving %s: %s", ", ".join(idle), reason)
    usable = {n: p for n, p in served.items() if n not in idle}
    if not usable:
        raise ConfigError(f"nothing to serve: every pipeline of the job is {reason}")
    return usable


def serve_spec(base: ServeSpec, overrides: Mapping[str, Any]) -> ServeSpec:
    """``base`` with command-line ``overrides`` applied and validated like the YAML."""
    try:
        return ServeSpec.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise validation_to_config_error(exc, ServeSpec, ("serve",)) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(spec: ServeSpec) -> None:
    """Refuse a non-loopback address without an API key, unless the job allows it explicitly."""
    if is_loopback(spec.host) or os.environ.get(spec.api_key_env) or spec.allow_unauthenticated:
        return
    raise ConfigError(
        f"serving on {spec.host} without an API key would let anyone who reaches port {spec.port} read the "
        f"indexed documents and spend the models' compute. Set the key in ${spec.api_key_env}, bind 127.0.0.1, "
        "or set serve.allow_unauthenticated: true to accept that risk",
        path=("serve", "host"),
    )


def run_server(job: Job, base_dir: Path, spec: ServeSpec | None = None, names: Sequence[str] | None = None) -> None:
    """Build the pipelines and serve them until interrupted (``spec`` overrides ``job.serve``)."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "fastapi", "serve") from None
    from .tracing import otlp_provider

    spec = spec or job.serve
    check_exposure(spec)
    check_port(spec.host, spec.port)  # before any model loads
    pipelines = job_pipelines_to_serve(job, base_dir, names)
    for name, p in pipelines.items():
        log.info("serving %s (%s): %r", name, "chat" if p.chats else "rerank", p.pipeline)
    quiet = logging.getLogger("rerankflow").getEffectiveLevel() > logging.INFO
    provider = otlp_provider()  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = create_app(pipelines, spec, job.cost, provider)
    try:
        uvicorn.run(app, host=spec.host, port=spec.port, log_level="warning" if quiet else "info")
    finally:
        if provider is not None:
            provider.shutdown()  # send the spans still buffered


def check_port(host: str, port: int) -> None:
    """A :class:`ConfigError` when ``host:port`` cannot be bound (another server holds it)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); another server may hold the port: "
                "stop it, or choose another with --port",
                path=("serve", "port"),
            ) from None


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, ready_timeout_s: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL, stops on exit.

    For notebooks and tests; ``port=0`` picks a free port.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="rerankflow-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise BackendError(f"the server did not start on {host}:{port} within {ready_timeout_s:g} s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
