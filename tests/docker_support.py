"""What the Docker backend's tests share: whether an engine answers, and test images built offline.

No registry is reachable here, so images are made with `docker import` from a root filesystem put
together on the fly from the host's own files (reference/sandbox.md §5.1). Each image is tagged with a
hash of its content and built once per engine.

Without an engine the Docker tests are skipped with the reason, unless SANDBOX_TEST_REQUIRE_DOCKER=1
(as `.ci/run` sets after starting one), where they fail instead: CI must never pass by skipping them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import REPO

DOCKER_HOST = os.environ.get("SANDBOX_DOCKER_HOST", "unix:///var/run/docker.sock")
IMAGE_FUNCTION = Path(__file__).resolve().parent / "functions" / "image"
HOST_PYTHON = Path("/usr/bin/python3")
# Parts of the standard library no handler needs; leaving them out keeps the image near 25 MB.
_STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "site-packages"}
_STDLIB_SKIP |= {"dist-packages", "__pycache__", "venv"}


@functools.cache
def engine_problem() -> str | None:
    """None when a Docker engine answers at DOCKER_HOST, else why not."""
    try:
        import docker

        docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=5).ping()
    except Exception as exc:  # any failure means "no engine" here
        return f"no Docker engine at {DOCKER_HOST} ({type(exc).__name__}); start one with scripts/docker-engine"
    return None


def require_docker() -> None:
    """Skip (or, in CI, fail) the calling test when there is no engine."""
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("SANDBOX_TEST_REQUIRE_DOCKER") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(scope="module")
def docker_engine() -> None:
    require_docker()


def _client():
    import docker

    return docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)


def _shared_libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"(/\S+\.so[^\s]*)", out)
    return [Path(path) for path in found]


def _add_file(tar: tarfile.TarFile, source: Path, name: str, mode: int | None = None) -> None:
    info = tar.gettarinfo(str(source), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if mode is not None:
        info.mode = mode
    if info.isfile():
        with open(source, "rb") as data:
            tar.addfile(info, data)
    else:
        tar.addfile(info)


def _add_tree(tar: tarfile.TarFile, source: Path, name: str) -> None:
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        relative = Path(root).relative_to(source)
        _add_file(tar, Path(root), f"{name}/{relative}".rstrip("/."))
        for file in sorted(files):
            _add_file(tar, Path(root) / file, f"{name}/{relative / file}")


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def python_rootfs() -> bytes:
    """A Lambda-like Python image: the host's python3 with its libraries and standard library, a
    POSIX shell, our bootstrap at /var/runtime and tests/functions/image at /var/task."""
    python = HOST_PYTHON.resolve()
    version = re.sub(r"^python", "", python.name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "usr", "usr/bin", "usr/lib", "lib", "lib64", "etc", "var"):
            _dir(tar, folder)
        _dir(tar, "var/runtime")
        _dir(tar, "tmp", 0o1777)
        _add_file(tar, python, "usr/bin/python3")
        _add_file(tar, Path("/bin/dash").resolve(), "bin/sh")
        for library in {*_shared_libraries(python), *_shared_libraries(Path("/bin/dash").resolve())}:
            real = library.resolve()
            # Keep the path the dynamic linker looks for; the loader must sit exactly where PT_INTERP says.
            _add_file(tar, real, str(library).lstrip("/"))
        _add_tree(tar, Path(f"/usr/lib/python{version}"), f"usr/lib/python{version}")
        _add_tree(tar, REPO / "bootstrap", "var/runtime/sandbox_bootstrap")
        _add_tree(tar, IMAGE_FUNCTION, "var/task")
    return buf.getvalue()


_LAUNCH = "import sys; sys.path.insert(0, '/var/runtime'); from sandbox_bootstrap.main import main; main()"


@functools.cache
def python_image() -> str:
    """Build (once per content) the test Python image and return its tag. Its ENTRYPOINT starts our
    bootstrap and its CMD names the handler, as AWS's base images do."""
    data = python_rootfs()
    tag = f"sandbox-runtime-test/python:{hashlib.sha256(data).hexdigest()[:16]}"
    client = _client()
    try:
        client.images.get(tag)
    except Exception:
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(
            data,
            repository=repository,
            tag=version,
            changes=[
                f'ENTRYPOINT ["/usr/bin/python3", "-c", "{_LAUNCH}"]',
                'CMD ["app.handler"]',
                "ENV IMAGE_GREETING=from-the-image PATH=/usr/bin:/bin",
                "WORKDIR /var/task",
            ],
        )
    client.api.tag(tag, "sandbox-runtime-test/python", "latest")  # the name templates use
    return tag


def containers_of_service(pid: int) -> list[str]:
    """Ids of the containers a service (by pid) has on the engine."""
    client = _client()
    found = client.api.containers(all=True, filters={"label": "sandbox-runtime.service"})
    return [c["Id"] for c in found if c["Labels"]["sandbox-runtime.service"].endswith(f":{pid}")]
