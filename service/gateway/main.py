"""``tierwise gateway --config FILE --port N``: check the config and keys, then serve."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from router_model.errors import InvalidData
from router_model.logs import configure_logging
from router_model.settings import Settings, env_secrets
from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.config import GatewayConfig, load_gateway_config
from service.shared.server_limits import uvicorn_options

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (``serve`` installs ones that exit cleanly)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(server: uvicorn.Server, sock: socket.socket) -> bool:
    """Serve until SIGTERM or SIGINT; returns whether the app started (its lifespan succeeded)."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn exits this way when the lifespan start-up failed
        return False
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        sock.close()
    return server.started


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket whose accepted connections have Nagle's algorithm off.

    Why: ``socket.create_server`` makes sockets with ``proto=0``, so asyncio's transports skip
    their own TCP_NODELAY; uvicorn then writes a response's head and body separately, and Nagle
    plus the client's delayed ACK add ~40 ms to every keep-alive request. Accepted sockets inherit
    the option from the listening one.
    """
    sock = socket.create_server((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _options(config: GatewayConfig, settings: Settings, no_auth: bool) -> GatewayOptions:
    """Resolve client, admin and upstream keys.

    Raises:
        InvalidData: when client keys are required but unset, or an upstream key is unset.
    """
    keys = settings.client_keys()
    if not keys and not no_auth:
        raise InvalidData(
            "no client keys: set TIERWISE_API_KEYS (comma-separated) or pass --no-auth"
        )
    upstream = env_secrets(config.api_key_envs())
    missing = [name for name, value in upstream.items() if value is None]
    if missing:
        users = [t.name for t in config.tiers if t.api_key_env in missing]
        raise InvalidData(
            f"upstream key variables not set: {', '.join(missing)} (tiers {', '.join(users)})"
        )
    admin = settings.gateway.admin_key
    return GatewayOptions(
        client_keys=keys,
        require_auth=not no_auth,
        admin_key=admin.get_secret_value() if admin is not None else None,
        upstream_keys={k: v.get_secret_value() for k, v in upstream.items() if v is not None},
        service=settings.service, server=settings.gateway.server,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway; 0 after a clean stop, 2 for a bad config or keys, 1 when start-up fails."""
    parser = argparse.ArgumentParser(
        prog="tierwise gateway",
        description="OpenAI-compatible gateway: each request goes to the cheapest adequate tier.",
    )
    parser.add_argument("--config", type=Path, help="gateway YAML (settings.gateway.config)")
    parser.add_argument("--host", help="address to bind (settings.gateway.host)")
    parser.add_argument("--port", type=int, help="port, 0 = any free one (settings.gateway.port)")
    parser.add_argument("--no-auth", action="store_true", help="serve without client keys")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    # one line per upstream call at INFO; the gateway's own per-request line says it all
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    path = args.config or settings.gateway.config
    try:
        if path is None:
            raise InvalidData("no config: pass --config FILE (or set TIERWISE_GATEWAY__CONFIG)")
        config = load_gateway_config(path)
        options = _options(config, settings, args.no_auth or settings.gateway.no_auth)
    except InvalidData as exc:
        logger.error("gateway not started: %s", exc)
        return 2
    host = args.host or settings.gateway.host
    port = settings.gateway.port if args.port is None else args.port
    sock = listening_socket(host, port)
    logger.info("gateway listening on http://%s:%d", host, sock.getsockname()[1])
    server = _Server(uvicorn.Config(
        create_gateway_app(config, options), log_config=None, access_log=False, lifespan="on",
        **uvicorn_options(settings.gateway.server),
    ))
    started = asyncio.run(serve(server, sock))
    if not started:
        logger.error("gateway not started: see the start-up error above")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
