"""Hot reload of the template file in `serve` (`template_reload.py`): a valid edit redeploys the functions it
changed, starts the ones it added and stops the ones it removed, leaving the others' environments alone; an
edit that does not load changes nothing (tests/reliability/test_faults.py has that fault); `--no-hot-reload`
keeps the template loaded at start."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError
from support import invoke, wait_for

PYTHON = Path(__file__).resolve().parent / "functions" / "python"


def write(path: Path, functions: dict[str, str], *, code: Path = PYTHON) -> None:
    """A template of python3.11 functions over tests/functions/python, name -> handler; written as editors
    save (a new file renamed over the old one)."""
    resources = {
        name.title().replace("-", ""): {
            "Type": "AWS::Serverless::Function",
            "Properties": {"FunctionName": name, "Handler": handler, "Runtime": "python3.11", "CodeUri": str(code)},
        }
        for name, handler in functions.items()
    }
    temporary = path.with_name(".template.new")
    temporary.write_text(yaml.safe_dump({"Transform": "AWS::Serverless-2016-10-31", "Resources": resources}))
    os.replace(temporary, path)


def events(service, name: str) -> list[dict]:
    return [event for event in service.log_events() if event.get("event") == name]


def cold_starts(service, name: str) -> int:
    return service.health()["pools"]["functions"][name]["cold_starts"]


def test_an_edit_redeploys_what_changed_adds_and_removes_functions(start_service, tmp_path):
    template = tmp_path / "template.yaml"
    write(template, {"keep": "app.echo", "change": "app.echo", "gone": "app.echo"})
    service = start_service(template)
    client = service.client()
    for name in ("keep", "change", "gone"):
        assert json.loads(invoke(client, name, {"n": 1})[1]) == {"n": 1}
    kept = cold_starts(service, "keep")

    write(template, {"keep": "app.echo", "change": "app.one_param", "new": "app.echo"})
    reloaded = wait_for(lambda: events(service, "template.reloaded"), 10, "the template to be reloaded")[0]
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == (["new"], ["change"], ["gone"])

    assert json.loads(invoke(client, "change", {"n": 2})[1]) == {"got": {"n": 2}}
    assert json.loads(invoke(client, "new", {"n": 3})[1]) == {"n": 3}
    assert json.loads(invoke(client, "keep", {"n": 4})[1]) == {"n": 4}
    assert cold_starts(service, "keep") == kept  # untouched: its warm environment served
    with pytest.raises(ClientError) as gone:
        invoke(client, "gone", {})
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert sorted(f["FunctionName"] for f in client.list_functions()["Functions"]) == ["change", "keep", "new"]
    assert client.get_function(FunctionName="change")["Configuration"]["Handler"] == "app.one_param"
    wait_for(lambda: "gone" not in service.health()["pools"]["functions"], 10, "the removed function's pool to end")


def test_a_code_edit_made_before_a_template_edit_is_still_served(start_service, tmp_path):
    """Code changes are noticed at the next invoke; a template reload in between must not forget them."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def handler(event, context):\n    return 'v1'\n")
    template = tmp_path / "template.yaml"
    write(template, {"keep": "app.handler"}, code=code)
    service = start_service(template)
    client = service.client()
    assert json.loads(invoke(client, "keep", {})[1]) == "v1"

    (code / "app.py").write_text("def handler(event, context):\n    return 'v2'\n")
    write(template, {"keep": "app.handler", "other": "app.handler"}, code=code)
    wait_for(lambda: events(service, "template.reloaded"), 10, "the template to be reloaded")
    assert json.loads(invoke(client, "keep", {})[1]) == "v2"
    (code / "app.py").write_text("def handler(event, context):\n    return 'v3'\n")  # and watched after it
    assert json.loads(invoke(client, "other", {})[1]) == "v3"
    assert json.loads(invoke(client, "keep", {})[1]) == "v3"


def test_an_edit_leaves_functions_it_does_not_change_as_they_are_served(start_service, tmp_path):
    """What the template says of a function is compared with what it said before, not with what serves: code
    given through UpdateFunctionCode since stays until the template changes that function."""
    template = tmp_path / "template.yaml"
    write(template, {"updated": "app.echo", "other": "app.echo"})
    service = start_service(template)
    client = service.client()
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", "def echo(event, context):\n    return 'from the api'\n")
    client.update_function_code(FunctionName="updated", ZipFile=package.getvalue())
    client.get_waiter("function_updated_v2").wait(FunctionName="updated")
    assert json.loads(invoke(client, "updated", {})[1]) == "from the api"

    write(template, {"updated": "app.echo", "other": "app.one_param"})
    reloaded = wait_for(lambda: events(service, "template.reloaded"), 10, "the template to be reloaded")[0]
    assert reloaded["changed"] == ["other"]
    assert json.loads(invoke(client, "updated", {})[1]) == "from the api"
    assert json.loads(invoke(client, "other", {"n": 1})[1]) == {"got": {"n": 1}}


def test_without_hot_reload_the_template_loaded_at_start_serves(start_service, tmp_path):
    template = tmp_path / "template.yaml"
    write(template, {"keep": "app.echo"})
    service = start_service(template, args=("--no-hot-reload",))
    client = service.client()
    write(template, {"keep": "app.one_param"})
    time.sleep(2)  # four times the interval at which a watched template is looked at
    assert json.loads(invoke(client, "keep", {"n": 1})[1]) == {"n": 1}
    assert not events(service, "template.reloaded") and not events(service, "template.watching")
