"""Real servers on loopback: the HTTP app and the gRPC server of one ``RouteService``.

Both run on one event loop in a background thread, as ``tierwise serve`` runs them, so in-process
calls (``ServiceThread.call``) share the core, and its micro-batcher, with both transports.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import uvicorn

from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServiceSettings
from service.router.core import RouteService
from service.router.transport.grpc_server import create_grpc_server
from service.router.transport.http_api import bind_http_socket, create_app

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "test-admin-key"
T = TypeVar("T")


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """The committed golden prompts: real rows of the shipped data sources."""
    doc = json.loads((REPO / "data" / "fixtures" / "golden_prompts.json").read_text("utf-8"))
    return [item["prompt"] for item in doc]


@pytest.fixture(scope="session")
def admin_key() -> str:
    """The admin bearer key of ``fast_service``."""
    return ADMIN_KEY


@dataclass
class ServiceThread:
    """A ``RouteService`` served over HTTP and gRPC from a background event loop."""

    service: RouteService
    http_url: str
    grpc_target: str
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Awaitable[T]) -> T:
        """Run a coroutine (an in-process call of the core) on the servers' loop."""
        async def run() -> T:
            return await coro

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result(timeout=30)


@pytest.fixture(scope="session")
def run_service() -> Iterator[Any]:
    """A factory: ``run_service(bundle, **service_settings)`` -> a started ``ServiceThread``."""
    stops: list[tuple[threading.Thread, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def start(bundle: Path, **overrides: Any) -> ServiceThread:
        settings = ServiceSettings(host="127.0.0.1", http_port=0, grpc_port=0, **overrides)
        service = RouteService.from_path(settings, bundle)
        ready: Future[ServiceThread] = Future()
        holder: dict[str, Any] = {}

        async def main() -> None:
            stop = asyncio.Event()
            holder["stop"] = stop
            grpc_server, grpc_port = create_grpc_server(settings, service)
            await grpc_server.start()
            sock = bind_http_socket("127.0.0.1", 0)
            http = uvicorn.Server(uvicorn.Config(create_app(settings, service), log_config=None,
                                        access_log=False, lifespan="off"))
            task = asyncio.create_task(http.serve(sockets=[sock]))
            while not http.started:
                await asyncio.sleep(0.005)
            ready.set_result(ServiceThread(
                service, f"http://127.0.0.1:{sock.getsockname()[1]}",
                f"127.0.0.1:{grpc_port}", asyncio.get_running_loop(),
            ))
            await stop.wait()
            await service.drain()
            await grpc_server.stop(0.5)
            http.should_exit = True
            await task
            await service.aclose()
            sock.close()

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # report start-up failures to the waiting test
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    raise
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"service-{bundle.name}", daemon=True)
        thread.start()
        st = ready.result(timeout=30)
        stops.append((thread, st.loop, holder["stop"]))
        return st

    yield start
    for thread, loop, stop in stops:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def fast_service(run_service: Any, fast_bundle: Path) -> ServiceThread:
    """The fast (hand-feature) bundle, admin endpoints on."""
    st: ServiceThread = run_service(fast_bundle, admin_key=ADMIN_KEY)
    return st


@pytest.fixture()
def http(fast_service: ServiceThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fast_service.http_url, timeout=10) as client:
        yield client


@pytest.fixture()
def stub(fast_service: ServiceThread) -> Iterator[router_pb2_grpc.RouterStub]:
    with grpc.insecure_channel(fast_service.grpc_target) as channel:
        yield router_pb2_grpc.RouterStub(channel)
