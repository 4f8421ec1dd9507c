"""Hot reload in `serve`: an edit under a function's CodeUri is served from the next invoke on, without a
restart; invocations already running end with the old code. A function with a requirements.txt goes
on serving its (now old) build, with a warning, until `sandbox-runtime build` writes a new one.
`--no-hot-reload` / SANDBOX_HOT_RELOAD=false keep the code staged at start.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from project_support import local_requirements, make_wheel, sandbox_runtime, write_template
from support import invoke, wait_for

APP = """\
import time

VERSION = {version!r}


def handler(event, context):
    if event.get("sleep"):
        print("sleeping with", VERSION, flush=True)
        time.sleep(event["sleep"])
    return {{"version": VERSION}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hot").mkdir()
    write_app(tmp_path / "hot", "v1")
    write_template(tmp_path, {"hot": "hot/"})
    return tmp_path


def write_app(folder: Path, version: str, *, source: str = APP, replace: bool = False) -> None:
    """Rewrite app.py in place (open, truncate, write), or `replace` it with a new file as many editors
    save (write a temporary file, rename it over)."""
    text = source.format(version=version)
    if replace:
        (folder / ".app.py.new").write_text(text)
        os.replace(folder / ".app.py.new", folder / "app.py")
    else:
        (folder / "app.py").write_text(text)


def call(client, event: dict | None = None, name: str = "hot") -> dict:
    response, payload = invoke(client, name, event or {})
    assert "FunctionError" not in response, payload
    return json.loads(payload)


def events(service, name: str) -> list[dict]:
    return [event for event in service.log_events() if event.get("event") == name]


def test_an_edit_is_served_from_the_next_invoke_while_a_running_invoke_ends_with_the_old_code(project, start_service):
    service = start_service(project / "template.yaml")
    client = service.client()
    assert call(client) == {"version": "v1"}

    slow: dict = {}
    thread = threading.Thread(target=lambda: slow.update(call(service.client(), {"sleep": 2})))
    thread.start()
    wait_for(lambda: events(service, "sleeping with v1"), 10, "the slow invocation to run")
    write_app(project / "hot", "v2")  # in place: the files of the running environment's copy are not its own
    assert call(client) == {"version": "v2"}
    thread.join(30)
    assert slow == {"version": "v1"}, service.logs()
    assert call(client) == {"version": "v2"}  # and warm from then on
    assert len(events(service, "function.reloaded")) == 1, service.logs()


def test_edits_anywhere_in_the_tree_and_a_syntax_error_that_is_then_fixed(project, start_service):
    service = start_service(project / "template.yaml")
    client = service.client()
    assert call(client) == {"version": "v1"}

    # A new folder is watched as soon as it appears.
    (project / "hot" / "lib").mkdir()
    (project / "hot" / "lib" / "helper.py").write_text("VALUE = 'helper 1'\n")
    source = "from lib.helper import VALUE\n" + APP.replace("VERSION = {version!r}", "VERSION = VALUE")
    write_app(project / "hot", "", source=source, replace=True)
    assert call(client) == {"version": "helper 1"}
    (project / "hot" / "lib" / "helper.py").write_text("VALUE = 'helper 2'\n")
    assert call(client) == {"version": "helper 2"}

    write_app(project / "hot", "v3", source="def handler(event, context):\n    return (\n")
    response, payload = invoke(client, "hot", {})
    assert response["FunctionError"] == "Unhandled", payload
    error = json.loads(payload)
    assert error["errorType"] == "Runtime.UserCodeSyntaxError", error
    assert "app" in error["errorMessage"], error

    write_app(project / "hot", "v3")
    assert call(client) == {"version": "v3"}

    # Editor leftovers and bytecode are not code changes: no reload for them.
    reloads = len(events(service, "function.reloaded"))
    (project / "hot" / ".app.py.swp").write_text("swap")
    (project / "hot" / "__pycache__").mkdir()
    (project / "hot" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    assert call(client) == {"version": "v3"}
    assert len(events(service, "function.reloaded")) == reloads, service.logs()


@pytest.mark.parametrize("how", ["--no-hot-reload", "SANDBOX_HOT_RELOAD=false"])
def test_without_hot_reload_the_code_staged_at_start_serves(project, start_service, how):
    if how.startswith("--"):
        service = start_service(project / "template.yaml", args=(how,))
    else:
        service = start_service(project / "template.yaml", env={"SANDBOX_HOT_RELOAD": "false"})
    client = service.client()
    assert call(client) == {"version": "v1"}
    write_app(project / "hot", "v2", replace=True)
    assert call(client) == {"version": "v1"}
    # A new environment (two at once) also gets the code of the start.
    slow = threading.Thread(target=lambda: call(service.client(), {"sleep": 1}))
    slow.start()
    wait_for(lambda: events(service, "sleeping with v1"), 10, "the slow invocation to run")
    assert call(client) == {"version": "v1"}
    slow.join(30)
    assert not events(service, "reload.watching") and not events(service, "function.reloaded"), service.logs()


def test_a_built_function_is_served_from_its_build_until_the_next_build(project, start_service):
    wheels = project / "wheels"
    make_wheel(wheels, "tinydep", "1.0", {"tinydep/__init__.py": "ANSWER = 42\n"})
    hot = project / "hot"
    (hot / "requirements.txt").write_text(local_requirements(wheels, "tinydep==1.0"))
    deps_app = "import tinydep\n" + APP.replace("VERSION = {version!r}", "VERSION = ({version!r}, tinydep.ANSWER)")
    write_app(hot, "v1", source=deps_app)
    template = project / "template.yaml"
    assert sandbox_runtime("build", "-t", template).returncode == 0

    service = start_service(template)
    client = service.client()
    assert call(client) == {"version": ["v1", 42]}
    assert not events(service, "function.not_built"), service.logs()

    write_app(hot, "v2", source=deps_app)
    assert call(client) == {"version": ["v1", 42]}  # the build, now out of date, still serves
    stale = events(service, "function.not_built")
    assert [w["state"] for w in stale] == ["stale"], service.logs()
    assert "sandbox-runtime build hot" in stale[0]["detail"]

    built = sandbox_runtime("build", "-t", template)
    assert built.returncode == 0 and "hot: built in" in built.stdout, str(built)
    assert call(client) == {"version": ["v2", 42]}
    assert len(events(service, "function.reloaded")) == 1, service.logs()


def test_an_edit_in_a_layer_is_served_from_the_next_invoke(tmp_path, start_service):
    (tmp_path / "layer" / "python").mkdir(parents=True)
    (tmp_path / "layer" / "python" / "shared.py").write_text("VALUE = 'layer 1'\n")
    (tmp_path / "hot").mkdir()
    source = "from shared import VALUE\n" + APP.replace("VERSION = {version!r}", "VERSION = VALUE")
    write_app(tmp_path / "hot", "", source=source)
    (tmp_path / "template.yaml").write_text(
        'AWSTemplateFormatVersion: "2010-09-09"\nTransform: AWS::Serverless-2016-10-31\nResources:\n'
        "  SharedLayer:\n    Type: AWS::Serverless::LayerVersion\n    Properties:\n      ContentUri: layer/\n"
        "  HotFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n      FunctionName: hot\n"
        "      Runtime: python3.11\n      Handler: app.handler\n      CodeUri: hot/\n"
        "      Layers: [!Ref SharedLayer]\n"
    )
    service = start_service(tmp_path / "template.yaml")
    client = service.client()
    assert call(client) == {"version": "layer 1"}
    (tmp_path / "layer" / "python" / "shared.py").write_text("VALUE = 'layer 2'\n")
    assert call(client) == {"version": "layer 2"}
