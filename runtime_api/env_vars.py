"""`--env-vars env.json` (SANDBOX_ENV_VARS): environment variables for template functions, in SAM's format.

    {"Parameters": {"STAGE": "local"},           every function
     "OrdersFunction": {"TABLE": "orders-dev"},  one function, by logical id or FunctionName
     "orders-api": {"DEBUG": "1"}}

A function's own section beats `Parameters`, which beats the template's `Environment.Variables`.
Unlike `sam local`, which drops every key the template does not declare (its most reported surprise),
every key is applied. Values are stringified as SAM does: booleans `true`/`false`, numbers as written,
null as an empty string. Names Lambda reserves are ignored with the usual `function.reserved_variables`
warning when the function is prepared.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError
from .functions import FunctionSpec
from .intrinsics import stringify

PARAMETERS = "Parameters"


class EnvVarsError(ConfigError):
    """The file cannot be read or has the wrong shape; the message starts with the file's name."""


@dataclass(frozen=True)
class EnvVars:
    path: Path
    sections: Mapping[str, Mapping[str, str]]  # "Parameters" or a function's logical id / name -> variables

    def for_function(self, function: FunctionSpec) -> dict[str, str]:
        """The variables for one function: Parameters, then its FunctionName section, then its logical
        id's section (later ones win)."""
        names = [function.name]
        if function.logical_id and function.logical_id != function.name:
            names.append(function.logical_id)
        merged = dict(self.sections.get(PARAMETERS, {}))
        for name in names:
            merged.update(self.sections.get(name, {}))
        return merged

    def unmatched(self, functions: Iterable[FunctionSpec]) -> list[str]:
        """Sections that name no function (they apply to nothing)."""
        known = {PARAMETERS}
        for function in functions:
            known.add(function.name)
            if function.logical_id:
                known.add(function.logical_id)
        return [name for name in self.sections if name not in known]


def load_env_vars(path: Path) -> EnvVars:
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvVarsError(f"--env-vars {label}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EnvVarsError(f"--env-vars {label}: not UTF-8 text") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvVarsError(
            f"--env-vars {label}: not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(document, dict):
        raise EnvVarsError(
            f"--env-vars {label}: expected an object like "
            '{"Parameters": {"KEY": "value"}, "FunctionLogicalId": {"KEY": "value"}}, '
            f"got {_kind(document)}"
        )
    sections: dict[str, dict[str, str]] = {}
    for section, variables in document.items():
        if not isinstance(variables, dict):
            raise EnvVarsError(
                f"--env-vars {label}: {section}: expected an object of variables, got {_kind(variables)}"
            )
        values: dict[str, str] = {}
        for key, value in variables.items():
            if not key or "=" in key or "\0" in key:
                raise EnvVarsError(f"--env-vars {label}: {section}: invalid variable name {key!r}")
            if isinstance(value, (dict, list)):
                raise EnvVarsError(
                    f"--env-vars {label}: {section}.{key}: expected a string, number or boolean, got {_kind(value)}"
                )
            text_value = stringify(value)
            if "\0" in text_value:
                raise EnvVarsError(f"--env-vars {label}: {section}.{key}: the value contains a NUL character")
            values[key] = text_value
        sections[section] = values
    return EnvVars(path=Path(path), sections=sections)


def apply_env_vars(functions: Iterable[FunctionSpec], env_vars: EnvVars | None) -> list[FunctionSpec]:
    """The functions with the file's variables over their own."""
    if env_vars is None:
        return list(functions)
    updated = []
    for function in functions:
        extra = env_vars.for_function(function)
        if extra:
            function = dataclasses.replace(function, environment={**function.environment, **extra})
        updated.append(function)
    return updated


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"{type(value).__name__} {json.dumps(value)}"
