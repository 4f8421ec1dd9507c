"""Links, FIFOs and devices in a CodeUri (reference/sandbox.md §7 #18, #19).

The host reads back nothing a sandbox writes for functions (results come over the Runtime API), so the
place where root on the host opens files on someone else's say-so is the CodeUri: the service stages it
into its state folder and byte-compiles it there. Neither may follow a link to a host file into something
the sandbox can read, nor block on a FIFO or a device.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from harness import SERVICE_ENV, assert_unharmed, probe
from support import wait_for

ABUSE = Path(__file__).resolve().parent.parent / "functions" / "abuse"


def test_links_fifos_and_devices_in_code_leak_nothing(start_service, tmp_path):
    marker = f"SECRET_{uuid.uuid4().hex}"
    private = tmp_path / "private"  # root's, 0700: a host folder the sandbox must never see into
    private.mkdir(mode=0o700)
    (private / "secret_mod.py").write_text(f"SECRET = {marker!r}\n")
    (private / "secretpkg").mkdir()
    (private / "secretpkg" / "__init__.py").write_text(f"SECRET = {marker!r}\n")
    for path in (private / "secret_mod.py", private / "secretpkg" / "__init__.py"):
        path.chmod(0o600)

    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(ABUSE / "app.py", code / "app.py")
    (code / "leak.py").symlink_to("/etc/shadow")
    (code / "secret_mod.py").symlink_to(private / "secret_mod.py")
    (code / "secretpkg").symlink_to(private / "secretpkg")
    os.mkfifo(code / "fifo.py")
    os.mkfifo(code / "pipe")
    os.mknod(code / "zero.py", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero: endless if read
    for folder in (tmp_path, code):
        folder.chmod(0o755)
    template = tmp_path / "template.yaml"
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Resources:\n"
        "  Probe:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties: {FunctionName: probe, Runtime: python3.11, Handler: app.probe, CodeUri: code/}\n"
        "  Hello:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties: {FunctionName: hello, Runtime: python3.11, Handler: app.hello, CodeUri: code/}\n"
    )

    service = start_service(template, env=SERVICE_ENV)  # starts (healthy) without blocking on the FIFOs
    state_dir = Path(next(e["state_dir"] for e in service.log_events() if e.get("event") == "service.ready"))
    (staged,) = (state_dir / "code").glob("code-*")
    # The background byte-compile finishes (it neither hangs on the FIFO nor reads /dev/zero forever).
    wait_for(lambda: list(staged.glob("__pycache__/app.*.pyc")), 20, "the staged code's byte-compiled app")

    shadow = Path("/etc/shadow").read_bytes()
    staged_files = {}
    for root, _, names in os.walk(staged):
        for name in names:
            path = Path(root, name)
            assert not stat.S_ISFIFO(path.lstat().st_mode) and not stat.S_ISCHR(path.lstat().st_mode), path
            if path.is_file() and not path.is_symlink():
                staged_files[str(path.relative_to(staged))] = path.read_bytes()
    assert sorted(staged_files) == ["__pycache__/" + p.name for p in staged.glob("__pycache__/*")] + ["app.py"]
    assert [p.name.split(".")[0] for p in staged.glob("__pycache__/*")] == ["app"]
    for content in staged_files.values():
        assert marker.encode() not in content and (not shadow or shadow not in content)
    assert os.readlink(staged / "leak.py") == "/etc/shadow"  # kept as a link: it resolves inside the sandbox

    seen = probe(
        service,
        "code",
        modules=["leak", "secret_mod", "secretpkg"],
        files=["leak.py", "secret_mod.py", "secretpkg/__init__.py", "fifo.py", "zero.py"],
    )
    assert "fifo.py" not in seen["listing"] and "zero.py" not in seen["listing"] and "pipe" not in seen["listing"]
    assert {"app.py", "leak.py", "secret_mod.py", "secretpkg"} <= set(seen["listing"])
    for module in ("leak", "secret_mod", "secretpkg"):  # the link targets do not exist in the sandbox
        assert seen[f"import {module}"] in ("ModuleNotFoundError", "FileNotFoundError"), seen[f"import {module}"]
    assert seen["leak.py"] == seen["secret_mod.py"] == seen["secretpkg/__init__.py"] == "ENOENT"
    assert seen["fifo.py"] == seen["zero.py"] == "ENOENT"
    assert list(seen["pycache"]) == [p.name for p in staged.glob("__pycache__/*")]
    text = repr(seen)
    assert marker not in text and "root:" not in text.replace("root:x:0:0", "")
    assert_unharmed(service)
