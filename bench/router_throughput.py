"""Throughput under concurrent clients for ``bench_router.py``: the encoder's raw batch rate (the
ceiling), the service in process, and the service over gRPC with lean or grpcio clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import grpc
from grpc_wire_client import GrpcWireClient, WireError
from serve_process import Server

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.router import ComplexityRouter
from service.router.core import RouteInput, RouteService


async def _drive(call: Callable[[str], Awaitable[object]], prompts: list[str], clients: int,
                 seconds: float, failure: type[Exception]) -> tuple[int, int]:
    """``clients`` coroutines awaiting ``call`` on the prompts in turn for ``seconds``: the calls
    done and the ``failure``s (counted and reported: the figure is "zero errors")."""
    stop = time.perf_counter() + seconds
    done = errors = 0

    async def client(c: int) -> None:
        nonlocal done, errors
        k = c
        while time.perf_counter() < stop:
            try:
                await call(prompts[k % len(prompts)])
                done += 1
            except failure:
                errors += 1
            k += clients

    await asyncio.gather(*(client(c) for c in range(clients)))
    return done, errors


def in_process_throughput(service: RouteService, prompts: list[str], clients: int,
                          seconds: float) -> tuple[float, int]:
    def call(prompt: str) -> Awaitable[object]:
        return service.route(RouteInput(prompt=prompt), transport="bench")

    t = time.perf_counter()
    done, errors = asyncio.run(_drive(call, prompts, clients, seconds, Exception))
    return done / (time.perf_counter() - t), errors


def encoder_batch_throughput(router: ComplexityRouter, prompts: list[str], batch: int,
                             seconds: float) -> float:
    """Prompts per second of the encoder alone on batches of ``batch`` (tokenising included)."""
    encoder = router.featurizer.encoder
    assert encoder is not None
    done, k, stop = 0, 0, time.perf_counter() + seconds
    t = time.perf_counter()
    while time.perf_counter() < stop:
        encoder.encode([prompts[(k + j) % len(prompts)] for j in range(batch)])
        done += batch
        k += batch
    return done / (time.perf_counter() - t)


def grpc_throughput(server: Server, prompts: list[str], clients: int,
                    seconds: float) -> tuple[float, int]:
    async def main() -> tuple[int, int]:
        async with grpc.aio.insecure_channel(server.grpc) as channel:
            stub = router_pb2_grpc.RouterStub(channel)

            def call(prompt: str) -> Awaitable[object]:
                return stub.Route(pb.RouteRequest(prompt=prompt), timeout=30)

            return await _drive(call, prompts, clients, seconds, grpc.RpcError)

    t = time.perf_counter()
    done, errors = asyncio.run(main())
    return done / (time.perf_counter() - t), errors


def lean_grpc_throughput(server: Server, prompts: list[str], clients: int,
                         seconds: float) -> tuple[float, int]:
    """Routes per second from ``clients`` threads, each with its own lean gRPC connection
    (``bench/grpc_wire_client.py``): blocked in ``recv`` while they wait, so the cores go to the
    server, as they would with clients on other machines."""
    done, errors = [0] * clients, [0] * clients
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        with GrpcWireClient(server.grpc) as conn:
            k = c
            while time.perf_counter() < stop:
                request = pb.RouteRequest(prompt=prompts[k % len(prompts)]).SerializeToString()
                try:
                    pb.RouteResponse.FromString(conn.call("/tierwise.v1.Router/Route", request))
                    done[c] += 1
                except WireError:
                    errors[c] += 1
                    return  # the connection's state is unknown after a failed call
                k += clients

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(done) / (time.perf_counter() - t), sum(errors)
