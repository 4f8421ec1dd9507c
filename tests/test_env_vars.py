"""`--env-vars env.json` / SANDBOX_ENV_VARS in SAM's format, for `serve` and `invoke`.

`Parameters` applies to every function, a section named by a logical id or FunctionName to that one;
unlike `sam local`, keys the template does not declare are applied too. Names Lambda reserves are
ignored with the usual warning. A bad file is a one-line error and exit status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import _UID_BLOCK, FUNCTIONS, REPO, _uid_blocks
from support import invoke

from runtime_api.env_vars import EnvVarsError, apply_env_vars, load_env_vars
from runtime_api.functions import FunctionSpec

ENV_FILE = {
    "Parameters": {
        "STAGE": "local",
        "SHARED_NEW": "everyone",
        "AWS_REGION": "mars-north-1",  # reserved: ignored with a warning
        "FLAG": True,
        "COUNT": 3,
        "RATIO": 0.5,
        "EMPTY": None,
    },
    "Orders": {"TABLE": "orders-dev", "ONLY_ORDERS": "undeclared in the template"},  # by logical id
    "orders-api": {"VIA_NAME": "yes", "TABLE": "by-name"},  # by FunctionName; the logical id's section wins
    "Nobody": {"X": "1"},  # names no function: a warning
}


def template(tmp_path: Path) -> Path:
    document = {
        "Globals": {
            "Function": {
                "Runtime": "python3.11",
                "CodeUri": str(FUNCTIONS / "python"),
                "Handler": "app.context_info",
                "Environment": {"Variables": {"STAGE": "template"}},
            }
        },
        "Resources": {
            "Orders": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "FunctionName": "orders-api",
                    "Environment": {"Variables": {"TABLE": "from-template", "KEPT": "template value"}},
                },
            },
            "Users": {"Type": "AWS::Serverless::Function", "Properties": {}},
        },
    }
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


# -- in the functions, over HTTP -------------------------------------------------------------------------


def test_parameters_and_per_function_sections_reach_the_functions(start_service, tmp_path):
    env_file = write_json(tmp_path / "env.json", ENV_FILE)
    service = start_service(template(tmp_path), args=("--env-vars", str(env_file)))
    client = service.client()

    response, body = invoke(client, "orders-api", {})
    assert "FunctionError" not in response, body
    orders = json.loads(body)["env"]
    assert orders["STAGE"] == "local"  # Parameters beat the template
    assert orders["SHARED_NEW"] == "everyone"  # not declared in the template: applied all the same
    assert orders["TABLE"] == "orders-dev"  # the function's section beats Parameters and the template
    assert orders["ONLY_ORDERS"] == "undeclared in the template"
    assert orders["VIA_NAME"] == "yes"
    assert orders["KEPT"] == "template value"
    assert (orders["FLAG"], orders["COUNT"], orders["RATIO"], orders["EMPTY"]) == ("true", "3", "0.5", "")
    assert orders["AWS_REGION"] == "us-east-1"  # reserved by Lambda

    response, body = invoke(client, "Users", {})
    users = json.loads(body)["env"]
    assert (users["STAGE"], users["SHARED_NEW"]) == ("local", "everyone")
    assert "TABLE" not in users and "ONLY_ORDERS" not in users and "VIA_NAME" not in users

    events = service.log_events()
    reserved = {e["function"]: e["variables"] for e in events if e.get("event") == "function.reserved_variables"}
    assert reserved == {"orders-api": ["AWS_REGION"], "Users": ["AWS_REGION"]}
    [unmatched] = [e for e in events if e.get("event") == "env_vars.unmatched"]
    assert unmatched["sections"] == ["Nobody"]
    assert unmatched["level"] == "warning"


def clean_environ(**extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    first = 300000 + (next(_uid_blocks) % 1000) * _UID_BLOCK  # a block of our own, as conftest picks them
    return {**environ, "SANDBOX_UID_RANGE": f"{first}-{first + _UID_BLOCK - 1}", **extra}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime_api", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or clean_environ(),
        timeout=120,
    )


def test_invoke_takes_the_variable_and_the_flag_wins(tmp_path):
    from_variable = write_json(tmp_path / "variable.json", {"Parameters": {"SOURCE": "SANDBOX_ENV_VARS"}})
    from_flag = write_json(tmp_path / "flag.json", {"Users": {"SOURCE": "--env-vars"}})
    path = template(tmp_path)
    result = run("invoke", "Users", "-t", str(path), env=clean_environ(SANDBOX_ENV_VARS=str(from_variable)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["env"]["SOURCE"] == "SANDBOX_ENV_VARS"
    result = run(
        "invoke",
        "Users",
        "-t",
        str(path),
        "-n",
        str(from_flag),
        env=clean_environ(SANDBOX_ENV_VARS=str(from_variable)),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["env"]["SOURCE"] == "--env-vars"


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"Parameters": {"A": "1",}}', "not valid JSON: Expecting property name enclosed in double quotes (line 1"),
        ('["A=1"]', 'expected an object like {"Parameters": {"KEY": "value"}, "FunctionLogicalId": {"KEY": "value"}}'),
        ('{"Parameters": ["A=1"]}', "Parameters: expected an object of variables, got a list"),
        ('{"Users": "A=1"}', 'Users: expected an object of variables, got str "A=1"'),
        ('{"Users": {"A": {"nested": 1}}}', "Users.A: expected a string, number or boolean, got an object"),
        ('{"Parameters": {"A=B": "x"}}', "Parameters: invalid variable name 'A=B'"),
        (None, "cannot read it: No such file or directory"),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, content, message):
    env_file = tmp_path / "env.json"
    if content is not None:
        env_file.write_text(content)
    result = run("invoke", "Users", "-t", str(template(tmp_path)), "--env-vars", str(env_file))
    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"sandbox-runtime: configuration error: --env-vars {env_file}: "), line
    assert message in line, line


def test_serve_refuses_a_bad_file_from_the_variable(tmp_path):
    env_file = tmp_path / "env.json"
    env_file.write_text("{")
    result = run("serve", "-t", str(template(tmp_path)), env=clean_environ(SANDBOX_ENV_VARS=str(env_file)))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"sandbox-runtime: configuration error: --env-vars {env_file}: not valid JSON: "
        "Expecting property name enclosed in double quotes (line 1 column 2)"
    ]


# -- the pieces ------------------------------------------------------------------------------------------


def test_sections_apply_in_order_without_touching_other_functions(tmp_path):
    env_vars = load_env_vars(write_json(tmp_path / "env.json", ENV_FILE))
    orders = FunctionSpec(name="orders-api", handler="a.b", runtime="python3.12", code_dir=None, logical_id="Orders")
    other = FunctionSpec(name="other", handler="a.b", runtime="python3.12", code_dir=None, environment={"STAGE": "t"})
    updated_orders, updated_other = apply_env_vars([orders, other], env_vars)
    assert updated_orders.environment["TABLE"] == "orders-dev"
    assert updated_other.environment == {
        "STAGE": "local",
        "SHARED_NEW": "everyone",
        "AWS_REGION": "mars-north-1",  # the service drops it, with its warning
        "FLAG": "true",
        "COUNT": "3",
        "RATIO": "0.5",
        "EMPTY": "",
    }
    assert env_vars.unmatched([orders, other]) == ["Nobody"]
    assert apply_env_vars([other], None) == [other]
    with pytest.raises(EnvVarsError):
        load_env_vars(tmp_path / "missing.json")
