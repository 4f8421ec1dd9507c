"""`runtime_api.workspace`: the path rules and the link-proof file operations the service uses on a session's
workspace, on a folder of the test's (run as root, like the service; files are given to `nobody`)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from runtime_api.session_errors import InvalidPathError, ResourceLimitError, SessionFileNotFoundError
from runtime_api.workspace import MAX_DEPTH, Workspace, parse_path

NOBODY = 65534


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("host secret")
    return Workspace(root, NOBODY, max_file_bytes=1000, max_entries=50)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("a.txt", ("a.txt",)),
        ("./dir//b.txt", ("dir", "b.txt")),
        ("/workspace/files/c.txt", ("files", "c.txt")),
        ("dir/", ("dir",)),
        ("with space/é.txt", ("with space", "é.txt")),
    ],
)
def test_paths_inside_the_workspace(raw: str, parts: tuple[str, ...]) -> None:
    assert parse_path(raw) == parts


@pytest.mark.parametrize(
    "raw",
    ["", "..", "../x", "a/../../x", "/etc/passwd", "/workspace/../etc/passwd", "/workspaces/x", "/tmp/x", "a\0b",
     "x" * 256, "/".join(["d"] * (MAX_DEPTH + 1)), "/workspace", "."],
)  # fmt: skip
def test_paths_refused(raw: str) -> None:
    with pytest.raises(InvalidPathError):
        parse_path(raw)
    with pytest.raises(InvalidPathError):
        parse_path(7)


def test_the_workspace_itself_is_a_folder_path() -> None:
    assert parse_path("/workspace", folder=True) == ()
    assert parse_path("", folder=True) == ()


def test_write_read_list(workspace: Workspace) -> None:
    entry = workspace.write(("deep", "er", "f.txt"), b"hello")
    assert (entry.name, entry.size) == ("deep/er/f.txt", 5)
    assert workspace.read(("deep", "er", "f.txt")) == b"hello"
    for path in (workspace.root / "deep", workspace.root / "deep/er", workspace.root / "deep/er/f.txt"):
        assert path.stat().st_uid == NOBODY  # the sandbox owns what the service writes for it
    workspace.write(("deep", "er", "f.txt"), [b"new ", b"content"])  # replaced, from chunks
    assert workspace.read(("deep", "er", "f.txt")) == b"new content"
    files, truncated = workspace.files()
    assert [f.name for f in files] == ["deep/er/f.txt"] and not truncated
    assert workspace.files(("deep",))[0][0].name == "deep/er/f.txt"
    with pytest.raises(SessionFileNotFoundError):
        workspace.read(("nope",))
    with pytest.raises(SessionFileNotFoundError):
        workspace.files(("nope",))
    with pytest.raises(InvalidPathError):
        workspace.read(("deep",))  # a folder


def test_links_are_never_followed(workspace: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    root = workspace.root
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    (root / "real").mkdir()
    (root / "real" / "up").symlink_to("../..")
    for parts in [("link",), ("dirlink", "outside.txt"), ("real", "up", "outside.txt")]:
        with pytest.raises(InvalidPathError):
            workspace.read(parts)
        with pytest.raises(InvalidPathError):
            workspace.open_file(parts)
    for parts in [("dirlink", "new.txt"), ("real", "up", "new.txt")]:
        with pytest.raises(InvalidPathError):
            workspace.write(parts, b"x")
    with pytest.raises(InvalidPathError):
        workspace.files(("dirlink",))
    assert workspace.files()[0] == []  # links are not listed, and not walked into
    workspace.write(("link",), b"replaced")  # writing at a link replaces the link
    assert not (root / "link").is_symlink() and (root / "link").read_bytes() == b"replaced"
    assert outside.read_text() == "host secret" and not (tmp_path / "new.txt").exists()


def test_fifos_and_special_files_are_refused_without_blocking(workspace: Workspace) -> None:
    os.mkfifo(workspace.root / "fifo")
    with pytest.raises(InvalidPathError, match="FIFO"):
        workspace.read(("fifo",))
    assert workspace.files()[0] == []
    workspace.write(("fifo",), b"now a file")  # replaced, never opened
    assert workspace.read(("fifo",)) == b"now a file"


def test_sizes_are_bounded(workspace: Workspace) -> None:
    with pytest.raises(ResourceLimitError) as too_big:
        workspace.write(("big",), b"x" * 1001)
    assert too_big.value.status == 413
    assert os.listdir(workspace.root) == []  # the partial upload is gone
    (workspace.root / "grown").write_bytes(b"x" * 2000)  # written by the sandbox itself
    with pytest.raises(ResourceLimitError):
        workspace.read(("grown",))
    for i in range(60):
        (workspace.root / f"f{i:02}").write_bytes(b"")
    files, truncated = workspace.files()
    assert len(files) == 50 and truncated


def test_upload_target(workspace: Workspace) -> None:
    (workspace.root / "existing").mkdir()
    assert workspace.upload_target("data.csv") == ("data.csv",)
    assert workspace.upload_target("C:\\Users\\me\\data.csv") == ("data.csv",)
    assert workspace.upload_target("../../etc/data.csv", "in/") == ("in", "data.csv")
    assert workspace.upload_target("data.csv", "/workspace/files/") == ("files", "data.csv")
    assert workspace.upload_target("data.csv", "/workspace") == ("data.csv",)
    assert workspace.upload_target("data.csv", "existing") == ("existing", "data.csv")
    assert workspace.upload_target("data.csv", "renamed.csv") == ("renamed.csv",)
    for name in ("", "..", "dir/"):
        with pytest.raises(InvalidPathError):
            workspace.upload_target(name)
    with pytest.raises(InvalidPathError):
        workspace.upload_target("x", "/etc/")


def test_a_folder_swapped_for_a_link_midway_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    """A race as the sandbox could run it: the walk sees the folder or refuses, never the outside file."""
    root = workspace.root
    (root / "real").mkdir()
    (root / "real" / "outside.txt").write_text("inside")
    (root / "fake").symlink_to(tmp_path)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(root / "real", root / "r")
            os.rename(root / "r", root / "real")
            os.rename(root / "fake", root / "r")
            os.rename(root / "r", root / "fake")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(2000):
            with contextlib.suppress(InvalidPathError, SessionFileNotFoundError):
                assert workspace.read(("r", "outside.txt")) == b"inside"
    finally:
        stop.set()
        swapper.join()
