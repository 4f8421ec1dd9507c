"""`sandbox-runtime build`: requirements.txt installed with pip next to a copy of the code, cached, and
used by `invoke` and `serve`, which warn about functions that need a build and have none (or an old one).

Packages come from wheels made by the test in a local folder (`--no-index --find-links` in the
requirements file), so pip never reaches an index.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from project_support import local_requirements, make_wheel, sandbox_runtime, write_template
from support import wait_for

APP = """\
import importlib

def handler(event, context):
    module = importlib.import_module(event.get("module", "tinydep"))
    return {"answer": module.ANSWER, "file": module.__file__}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """`deps` (with a requirements.txt), `plain` (without), and a folder of wheels."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinydep", "1.0", {"tinydep/__init__.py": "ANSWER = 42\n"})
    make_wheel(wheels, "otherdep", "2.0", {"otherdep.py": "ANSWER = 'other'\n"})
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "app.py").write_text(APP)
    (tmp_path / "deps" / "requirements.txt").write_text(local_requirements(wheels, "tinydep==1.0"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "app.py").write_text(APP)
    write_template(tmp_path, {"deps": "deps/", "plain": "plain/"})
    return tmp_path


def manifest(root: Path, name: str) -> dict:
    return json.loads((root / name / "build.json").read_text())


def invoke_json(
    project: Path, name: str, event: dict | None = None, template: str = "template.yaml", **kwargs
) -> tuple[dict, str]:
    result = sandbox_runtime(
        "invoke", name, "-t", project / template, "-e", "-", **kwargs, stdin=json.dumps(event or {})
    )
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout), result.stderr


def test_build_installs_requirements_and_invoke_uses_the_build(project):
    result = sandbox_runtime("build", "-t", project / "template.yaml")
    assert result.returncode == 0, str(result)
    assert "deps: built in " in result.stdout, str(result)
    assert "plain: nothing to build (no requirements.txt: its code folder is served as it is)" in result.stdout
    root = project / ".sandbox-runtime" / "build"
    built = manifest(root / "functions", "deps")
    assert built["source"] == str(project / "deps") and built["runtime"] == "python3.11"
    tree = root / "functions" / "deps" / built["tree"]
    assert (tree / "app.py").read_text() == APP and (tree / "tinydep" / "__init__.py").is_file()
    assert not (root / "functions" / "plain").exists()

    answer, stderr = invoke_json(project, "deps")
    assert answer == {"answer": 42, "file": "/var/task/tinydep/__init__.py"}, stderr
    assert "function.not_built" not in stderr, stderr

    # Nothing changed: nothing is installed again, the same tree serves.
    again = sandbox_runtime("build", "-t", project / "template.yaml", "deps")
    assert again.returncode == 0, str(again)
    assert "deps: up to date" in again.stdout and built["tree"] in again.stdout, str(again)
    assert "plain" not in again.stdout, str(again)  # only the function named
    assert manifest(root / "functions", "deps") == built  # not even rewritten

    # A new requirement: built again, into a new tree; the old one is gone.
    (project / "deps" / "requirements.txt").write_text(
        local_requirements(project / "wheels", "tinydep==1.0", "otherdep==2.0")
    )
    rebuilt = sandbox_runtime("build", "-t", project / "template.yaml")
    assert rebuilt.returncode == 0, str(rebuilt)
    assert "deps: built in " in rebuilt.stdout, str(rebuilt)
    assert manifest(root / "functions", "deps")["tree"] != built["tree"]
    assert not tree.exists()
    answer, stderr = invoke_json(project, "deps", {"module": "otherdep"})
    assert answer["answer"] == "other", stderr


def test_invoke_warns_when_a_function_is_not_built_or_its_build_is_old(project):
    not_built = sandbox_runtime("invoke", "deps", "-t", project / "template.yaml")
    assert not_built.returncode == 0, str(not_built)
    assert json.loads(not_built.stdout)["errorType"] == "ModuleNotFoundError"  # served as it is
    assert "function.not_built" in not_built.stderr, str(not_built)
    assert f"sandbox-runtime build deps --template {project / 'template.yaml'}" in not_built.stderr

    assert sandbox_runtime("build", "-t", project / "template.yaml").returncode == 0
    (project / "deps" / "app.py").write_text(APP.replace("42", "0") + "\n# edited\n")
    stale, stderr = invoke_json(project, "deps")
    assert stale["answer"] == 42, stderr  # the last build serves until the next `build`
    assert "function.not_built" in stderr and "out of date" in stderr, stderr

    result = sandbox_runtime("invoke", "plain", "-t", project / "template.yaml")
    assert "function.not_built" not in result.stderr, str(result)  # nothing to build there


def test_serve_warns_at_start_when_a_function_is_not_built(project, start_service):
    service = start_service(project / "template.yaml")
    warnings = wait_for(
        lambda: [e for e in service.log_events() if e.get("event") == "function.not_built"], 10, "the warning"
    )
    assert [w["function"] for w in warnings] == ["deps"], warnings
    assert warnings[0]["level"] == "warning" and warnings[0]["state"] == "not_built"
    assert "sandbox-runtime build deps" in warnings[0]["detail"], warnings


def test_build_dir_flag_and_variable(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("builds") / "out"
    result = sandbox_runtime("build", "-t", project / "template.yaml", "--build-dir", elsewhere)
    assert result.returncode == 0, str(result)
    assert (elsewhere / "functions" / "deps" / "build.json").is_file()
    assert not (project / ".sandbox-runtime").exists()
    # Both spellings find it; without either, the default folder has no build.
    for extra, env in ((("--build-dir", elsewhere), None), ((), {"SANDBOX_BUILD_DIR": str(elsewhere)})):
        result = sandbox_runtime("invoke", "deps", "-t", project / "template.yaml", *extra, env=env)
        assert result.returncode == 0, str(result)
        assert json.loads(result.stdout)["answer"] == 42, str(result)
        assert "function.not_built" not in result.stderr, str(result)


def test_failed_pip_shows_its_output_and_exits_2(project):
    (project / "deps" / "requirements.txt").write_text(local_requirements(project / "wheels", "no-such-package==9"))
    result = sandbox_runtime("build", "-t", project / "template.yaml", "--parallel")
    assert result.returncode == 2, str(result)
    assert "no-such-package" in result.stderr and "No matching distribution" in result.stderr, str(result)
    assert "build of deps failed: pip exited with status 1" in result.stderr, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert not (project / ".sandbox-runtime" / "build" / "functions" / "deps" / "build.json").exists()


def test_unknown_function_lists_the_template_functions(project):
    result = sandbox_runtime("build", "-t", project / "template.yaml", "nope")
    assert result.returncode == 1, str(result)
    assert "'nope'" in result.stderr and "deps (DepsFunction)" in result.stderr, str(result)


LAYERED = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  LayeredFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: layered
      Runtime: python3.11
      Handler: app.handler
      CodeUri: plain/
      Layers: [!Ref SharedLayer]
"""


def test_a_layer_with_requirements_is_built_into_python(project):
    """As `sam build` builds a layer with `BuildMethod: python3.x`: the packages and the layer's own
    files under python/, which /opt/python puts on the path."""
    (project / "layer").mkdir()
    (project / "layer" / "shared.py").write_text("ANSWER = 'shared'\n")
    (project / "layer" / "requirements.txt").write_text(local_requirements(project / "wheels", "tinydep==1.0"))
    (project / "layered.yaml").write_text(LAYERED)
    template = project / "layered.yaml"

    result = sandbox_runtime("invoke", "layered", "-t", template)
    assert json.loads(result.stdout)["errorType"] == "ModuleNotFoundError", str(result)
    assert "function.not_built" in result.stderr and f"its layer {project / 'layer'}" in result.stderr, str(result)

    built = sandbox_runtime("build", "-t", template)
    assert built.returncode == 0, str(built)
    assert "layered: nothing to build" in built.stdout, str(built)
    assert f"layer {project / 'layer'} (for python3.11): built in" in built.stdout, str(built)
    answer, stderr = invoke_json(project, "layered", template="layered.yaml")
    assert answer == {"answer": 42, "file": "/opt/python/tinydep/__init__.py"}, stderr
    answer, stderr = invoke_json(project, "layered", {"module": "shared"}, template="layered.yaml")
    assert answer == {"answer": "shared", "file": "/opt/python/shared.py"}, stderr
    assert "function.not_built" not in stderr, stderr
