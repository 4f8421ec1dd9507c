"""A throwaway SAM project for the build and hot-reload tests: a template, function folders, and a
local folder of wheels made here, so `pip install` never needs a package index or the network."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

from conftest import _UID_BLOCK, REPO, _uid_blocks, assert_no_sandbox_left
from support import Result

SANDBOX_RUNTIME = str(REPO / ".venv" / "bin" / "sandbox-runtime")

FUNCTION = """\
  {logical_id}:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: {name}
      Runtime: python3.11
      Handler: app.handler
      CodeUri: {code_uri}
      Timeout: 20
"""


def write_template(project: Path, functions: dict[str, str]) -> Path:
    """template.yaml with one function per `name: CodeUri`."""
    body = "".join(
        FUNCTION.format(logical_id=name.title().replace("-", "") + "Function", name=name, code_uri=code_uri)
        for name, code_uri in functions.items()
    )
    template = project / "template.yaml"
    template.write_text(
        f'AWSTemplateFormatVersion: "2010-09-09"\nTransform: AWS::Serverless-2016-10-31\nResources:\n{body}'
    )
    return template


def make_wheel(folder: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """A pure-Python wheel `name-version-py3-none-any.whl` in `folder` holding `modules` (path: source)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        **modules,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def local_requirements(wheels: Path, *requirements: str) -> str:
    """A requirements.txt that installs from `wheels` only (pip reads options in the file)."""
    return "\n".join(["--no-index", f"--find-links {wheels}", *requirements]) + "\n"


def sandbox_runtime(
    *args: str | Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path = REPO,
    timeout: float = 120,
) -> Result:
    """Run the command (not a service) with this environment minus SANDBOX_* settings, plus a block of
    sandbox uids of its own and `env`; checks that no sandbox outlived it."""
    first = 300000 + (next(_uid_blocks) % 1000) * _UID_BLOCK
    uid_range = (first, first + _UID_BLOCK - 1)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    environment["SANDBOX_UID_RANGE"] = f"{uid_range[0]}-{uid_range[1]}"
    environment.update(env or {})
    done = subprocess.run(
        [SANDBOX_RUNTIME, *map(str, args)],
        input=stdin or "",
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )
    assert_no_sandbox_left(uid_range, "the command")
    return Result(done.returncode, done.stdout, done.stderr)
