"""Following a registry alias (``models:/NAME@champion``): serve the version it points at, and
hot-reload when the alias moves to another version.

The service never imports mlflow or ``training``: ``service.router.main`` hands in a
``RegistryClient`` (the ``training.registry`` module, imported by name only for a models:/ ref).
Each poll asks which version the alias names (one registry query); only a new version is
downloaded, into a private directory, and swapped in through ``RouteService.reload``, so a bad
bundle (or one for other tier names) is refused and the old one keeps serving, exactly as an admin
reload.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from router_model.errors import NotFound, RouterError
from router_model.settings import ServiceSettings
from service.router.core import RouteService

logger = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
#: Seconds between two looks at the alias when ``TIERWISE_SERVICE__WATCH_INTERVAL_S`` is not set
#: (one small registry query each; a promotion is rare, so half a minute of delay costs nothing).
DEFAULT_POLL_S = 30.0


class RegistryClient(Protocol):
    """What following an alias needs from the registry (``training.registry`` provides it)."""

    def check_store(self, tracking_uri: str) -> object: ...

    def alias_version(self, tracking_uri: str, name: str, alias: str) -> str | None: ...

    def materialize(self, tracking_uri: str, model_uri: str, dest: Path | None = None) -> Path: ...


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` URI: ``alias`` is None for one that cannot move (``NAME/VERSION``)."""

    name: str
    alias: str | None

    @classmethod
    def parse(cls, ref: str) -> RegistryRef | None:
        """The ref of a ``models:/`` URI, None for anything else (a bundle path)."""
        if not ref.startswith(REGISTRY_SCHEME):
            return None
        rest = ref.removeprefix(REGISTRY_SCHEME)
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            return cls(name, alias)
        return cls(rest.split("/", 1)[0], None)

    def version_uri(self, version: str) -> str:
        return f"{REGISTRY_SCHEME}{self.name}/{version}"

    def __str__(self) -> str:
        return f"{REGISTRY_SCHEME}{self.name}@{self.alias}"


def poll_interval(settings: ServiceSettings) -> float:
    """``watch_interval_s`` when it was set (0 turns following off), else ``DEFAULT_POLL_S``.

    The bundle-path watch is off by default; a registry alias is followed by default, because
    serving ``@champion`` asks for whatever the champion is.
    """
    if "watch_interval_s" in settings.model_fields_set:
        return settings.watch_interval_s
    return DEFAULT_POLL_S


class RegistryWatch:
    """The alias being served: which version, where it was downloaded, and the poll loop."""

    def __init__(self, client: RegistryClient, tracking_uri: str, ref: RegistryRef,
                 workdir: Path, interval_s: float) -> None:
        self.interval_s = interval_s  # 0: serve the version found at start, never poll
        self._client = client
        self._tracking_uri = tracking_uri
        self._ref = ref
        self._workdir = workdir
        #: the version served, and the last version the alias was seen naming (maybe refused)
        self.version: str | None = None
        self._seen: str | None = None
        self.path: Path | None = None
        self._missing_logged = False

    def fetch_initial(self) -> Path:
        """Resolve the alias once and download that version (blocking; before serving starts).

        Raises:
            NotFound: when the store is missing (nothing is created) or unreachable, or the
                registry has no such model or alias.
            ArtifactMismatch: when what the registry holds is not a bundle.
        """
        self._client.check_store(self._tracking_uri)  # says which: missing or unreachable
        version = self._alias_version()
        if version is None:
            raise NotFound(f"{self._ref}: no such model or alias in the registry at "
                           f"{self._tracking_uri}")
        self.version = self._seen = version
        self.path = self._download(version)
        logger.info("materialised %s (version %s) into %s", self._ref, version, self.path)
        return self.path

    async def run(self, service: RouteService) -> None:
        """Poll every ``interval_s`` seconds until cancelled (``poll`` says what happens)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.poll(service)

    async def poll(self, service: RouteService) -> bool:
        """Look at the alias once; when it names a new version, download and reload it.

        Returns whether a new version is now served. A refused or unreachable version is logged
        and remembered (not fetched again until the alias moves once more); the served bundle
        stays.
        """
        version = await asyncio.to_thread(self._resolve)
        if version is None:
            if not self._missing_logged:
                logger.warning("%s: alias not found (or registry unreachable); still serving "
                               "version %s", self._ref, self.version)
                self._missing_logged = True
            return False
        self._missing_logged = False
        if version == self._seen:
            return False
        self._seen, previous = version, self.version
        if version == previous:  # back to the served version after a refused one
            return False
        logger.info("%s moved from version %s to %s: reloading", self._ref, previous, version)
        try:
            path = await asyncio.to_thread(self._download, version)
            await service.reload(path)
        except (RouterError, OSError) as exc:
            logger.warning("%s version %s refused, still serving the old bundle: %s",
                           self._ref, version, exc)
            shutil.rmtree(self._dir(version), ignore_errors=True)
            return False
        self.version, self.path = version, path
        if previous is not None:  # the old router is in memory: its files are not read again
            shutil.rmtree(self._dir(previous), ignore_errors=True)
        return True

    def close(self) -> None:
        """Remove every downloaded bundle."""
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _resolve(self) -> str | None:
        """The alias's version, None when absent or when the store is missing or unreachable
        (probed first: MLflow would create a missing SQLite file, or retry a dead server for
        minutes)."""
        try:
            self._client.check_store(self._tracking_uri)
        except NotFound as exc:
            logger.debug("registry not there: %s", exc)
            return None
        return self._alias_version()

    def _alias_version(self) -> str | None:
        """The alias's version from a store already probed (None: no such model or alias)."""
        assert self._ref.alias is not None  # only alias refs are followed
        return self._client.alias_version(self._tracking_uri, self._ref.name, self._ref.alias)

    def _download(self, version: str) -> Path:
        # by version, not by alias: the alias may move again between the lookup and the download
        shutil.rmtree(self._dir(version), ignore_errors=True)
        dest = self._dir(version) / "bundle"
        dest.mkdir(parents=True)
        return self._client.materialize(self._tracking_uri, self._ref.version_uri(version), dest)

    def _dir(self, version: str) -> Path:
        return self._workdir / f"v{version}"
