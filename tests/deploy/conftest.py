"""Deploy tests: real images and manifests (``make test-deploy``; never part of ``make test``).

They run only with ``TIERWISE_DEPLOY_TESTS=1`` (the make target sets it) and skip, saying why,
without podman, debootstrap or kubectl, or when not root (the base image is debootstrapped and
podman runs rootful here, as in CI). The serving image is built once per session from the
Containerfile on a Debian base made by ``deploy/podman/base-image.sh`` (kept between runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import (
    BASE_IMAGE,
    CONTAINERS_CONF,
    FIGURES,
    INFRA_IMAGE,
    REPO,
    SERVE_IMAGE,
    TRAIN_IMAGE,
    build,
    need_podman,
    podman,
    report,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TIERWISE_DEPLOY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="deploy tests build real images: run `make test-deploy`")
    for item in items:
        if "tests/deploy" in str(item.path):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("deploy figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def base_image() -> str:
    need_podman()
    if os.environ.get("TIERWISE_DEPLOY_BASE") is None:
        exists = podman("image", "exists", BASE_IMAGE, check=False).returncode == 0
        if not exists and shutil.which("debootstrap") is None:
            pytest.skip("debootstrap is not installed and no base image is cached "
                        "(apt-get install debootstrap)")
        env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
        subprocess.run([str(REPO / "deploy" / "podman" / "base-image.sh"), BASE_IMAGE],
                       check=True, env=env, timeout=900)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def serve_image(base_image: str) -> str:
    seconds = build(base_image, SERVE_IMAGE)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", SERVE_IMAGE).stdout.strip())
    report(f"serving image {SERVE_IMAGE}: built in {seconds:.0f} s, size {size / 1e6:.0f} MB")
    return SERVE_IMAGE


@pytest.fixture(scope="session")
def infra_image(base_image: str) -> str:
    """PostgreSQL, HAProxy and Prometheus from Debian's packages (``infra.Containerfile``), for
    the Compose stack tests; they skip without podman-compose."""
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (apt-get install podman-compose)")
    compose_dir = REPO / "deploy" / "compose"
    podman("build", "--network=host", "--build-arg", f"BASE_IMAGE={base_image}", "-t",
           INFRA_IMAGE, "-f", str(compose_dir / "infra.Containerfile"), str(compose_dir),
           timeout=1200)
    return INFRA_IMAGE


@pytest.fixture(scope="session")
def train_image(base_image: str) -> str:
    """The Containerfile's ``train`` target (MLflow's server, the registry client)."""
    seconds = build(base_image, TRAIN_IMAGE, target="train")
    report(f"train image {TRAIN_IMAGE}: built in {seconds:.0f} s")
    return TRAIN_IMAGE


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A writable host directory for /var/lib/tierwise, owned by the image's user (10001)."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 10001, 10001)
    yield state
