"""``tierwise serve``: load settings and the bundle once, then serve HTTP and gRPC on one loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import uvicorn
import uvloop

from router_model.errors import NotFound, RouterError
from router_model.logs import configure_logging
from router_model.settings import ServiceSettings, Settings
from service.router.core import RouteService
from service.router.registry_watch import (
    REGISTRY_SCHEME,
    RegistryClient,
    RegistryRef,
    RegistryWatch,
    poll_interval,
)
from service.router.transport.grpc_server import create_grpc_server
from service.router.transport.http_api import bind_http_socket, create_app
from service.shared.server_limits import uvicorn_options

logger = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling.

    ``serve`` owns SIGTERM/SIGINT so that shutdown runs in order (health, gRPC, then HTTP);
    uvicorn's handlers would also re-raise the signal after exit, turning a clean stop into
    exit status -15.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


#: Gives the MLflow registry client: passed in by the CLI (the service never imports training).
RegistryFactory = Callable[[], RegistryClient]


def _no_registry() -> RegistryClient:
    raise NotFound("models:/ references need the registry client: run this through the "
                   "'tierwise' command with the training extra (pip install 'tierwise[train]')")


def resolve_model(ref: str, tracking_uri: str, registry: RegistryFactory = _no_registry) -> Path:
    """The local bundle directory for ``ref``: a path, or a ``models:/`` registry URI.

    Raises:
        NotFound: when the registry has no such model or alias, or no registry client is given.
        ArtifactMismatch: when what the registry holds is not a bundle.
    """
    if not ref.startswith(REGISTRY_SCHEME):
        return Path(ref)
    path = registry().materialize(tracking_uri, ref)
    logger.info("materialised %s into %s", ref, path)
    return path


async def serve(
    settings: ServiceSettings,
    route_service: RouteService,
    watch: Path | None = None,
    follow: RegistryWatch | None = None,
) -> None:
    """Serve HTTP and gRPC until SIGTERM or SIGINT, then shut down gracefully.

    With ``watch`` and ``settings.watch_interval_s`` set, the bundle there is reloaded on change;
    with ``follow`` (a registry alias, its poll interval > 0), the alias's new versions are.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = bind_http_socket(settings.host, settings.http_port)  # both bind before either serves
    try:
        grpc_server, grpc_port = create_grpc_server(settings, route_service)
    except OSError:
        sock.close()
        raise
    await grpc_server.start()
    logger.info("grpc listening on %s:%d", settings.host, grpc_port)
    config = uvicorn.Config(
        create_app(settings, route_service), log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=max(1, round(settings.grace_seconds)),
        **uvicorn_options(settings.server),
    )
    http = _HttpServer(config)
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    logger.info("http listening on %s:%d", settings.host, sock.getsockname()[1])
    stopping = asyncio.create_task(stop.wait())
    watcher = None
    if watch is not None and settings.watch_interval_s > 0:
        watcher = asyncio.create_task(route_service.watch(watch, settings.watch_interval_s))
    elif follow is not None and follow.interval_s > 0:
        watcher = asyncio.create_task(follow.run(route_service))
    await asyncio.wait({stopping, http_task}, return_when=asyncio.FIRST_COMPLETED)
    logger.info("shutting down: health NOT_SERVING, gRPC grace %.1fs", settings.grace_seconds)
    await route_service.drain()
    await grpc_server.stop(settings.grace_seconds)
    http.should_exit = True
    helpers = [t for t in (stopping, watcher) if t is not None]
    for task in helpers:
        task.cancel()
    await asyncio.gather(http_task, *helpers, return_exceptions=True)
    await route_service.aclose()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    sock.close()
    logger.info("stopped")


def main(argv: Sequence[str] | None = None, registry: RegistryFactory = _no_registry) -> int:
    """Run ``tierwise serve``; 0 after a clean shutdown, 1 when a port is refused, 2 when the
    bundle is (``registry`` gives the client for ``models:/`` references)."""
    parser = argparse.ArgumentParser(
        prog="tierwise serve", description="Serve routing decisions over HTTP and gRPC."
    )
    parser.add_argument(
        "--model", help="bundle directory or models:/<name>@<alias> (default: settings.model)"
    )
    parser.add_argument("--host", help="address to bind (settings.service.host)")
    parser.add_argument("--http-port", type=int, help="HTTP port, 0 = any free one")
    parser.add_argument("--grpc-port", type=int, help="gRPC port, 0 = any free one")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    overrides = {"host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port}
    service_settings = ServiceSettings.model_validate(
        {**settings.service.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    ref = args.model or settings.model.registry_uri or str(settings.model.path)
    parsed = RegistryRef.parse(ref)
    follow = None
    if parsed is not None and parsed.alias is not None:
        try:
            client = registry()
        except RouterError as exc:
            logger.error("cannot serve %s: %s", ref, exc)
            return 2
        workdir = Path(tempfile.mkdtemp(prefix="tierwise-registry-"))
        follow = RegistryWatch(client, settings.training.mlflow_tracking_uri, parsed,
                               workdir, poll_interval(settings.service))
    try:
        return _run(service_settings, settings, ref, follow, registry)
    finally:
        if follow is not None:
            follow.close()


def _run(service_settings: ServiceSettings, settings: Settings, ref: str,
         follow: RegistryWatch | None, registry: RegistryFactory) -> int:
    try:
        if follow is not None:
            path = follow.fetch_initial()
        else:
            path = resolve_model(ref, settings.training.mlflow_tracking_uri, registry)
        route_service = RouteService.from_path(
            service_settings, path, encoder_threads=settings.model.encoder_threads
        )
    except RouterError as exc:  # what --model names cannot be served: a usage error
        logger.error("cannot serve %s: %s", ref, exc)
        return 2
    logger.info("serving %s from %s", route_service.manifest.model_version, path)
    if follow is not None and follow.interval_s > 0:
        logger.info("following %s: polling the registry every %.1fs", ref, follow.interval_s)
    # a bundle materialised from the registry is a private copy: only watch a path given as such
    watch = path if RegistryRef.parse(ref) is None else None
    try:
        # uvloop: asyncio's API on libuv, ~0.2-0.3 ms less per HTTP request (bench_router.py)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(service_settings, route_service, watch, follow))
    except OSError as exc:
        logger.error("cannot listen: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
