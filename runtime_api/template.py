"""The SAM template loader: a template.yaml (or .json) in, the FunctionSpecs the service runs out.

It reads a template the way `sam local start-lambda` does: cfn-lint's decoder parses YAML and JSON
with the short-form tags, aws-sam-translator's Globals merges `Globals.Function` into each
`AWS::Serverless::Function`, and intrinsics are evaluated against parameters and pseudo parameters
for the properties we read. Everything else in the template is ignored or listed as skipped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import decode
from samtranslator.model.exceptions import ExceptionWithMessage
from samtranslator.plugins.globals.globals import Globals
from samtranslator.public.intrinsics import IntrinsicsResolver

from .functions import FunctionSpec

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"

_ARCHITECTURES = ("x86_64", "arm64")
_PROVIDED_RUNTIMES = ("provided", "provided.al2", "provided.al2023")
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_HANDLER_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:[./][A-Za-z_][A-Za-z0-9_-]*)*")
_SUB_REF_RE = re.compile(r"\$\{([^!}][^}]*)\}")
_STACK_ID_SUFFIX = "stack/local/51af3dc0-da77-11e4-872e-1234567db123"  # the one SAM CLI uses
_NO_VALUE = object()  # what `Ref: AWS::NoValue` resolves to: the property is dropped


class TemplateError(Exception):
    """A template we cannot serve. The message names the file and, when relevant, resource and property."""


@dataclass(frozen=True)
class Template:
    path: Path
    functions: tuple[FunctionSpec, ...]
    skipped: tuple[tuple[str, str], ...]  # (logical_id, reason) for resources we do not run


def load_template(
    path: str | Path,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    account_id: str = "123456789012",
) -> Template:
    """Read a SAM/CloudFormation template and return the functions it defines."""
    label = str(path)
    source = Path(path).absolute()
    document = _decode(source, label)
    resources = document.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise TemplateError(f"{label}: the template has no Resources")
    try:
        template_globals = Globals(document)
    except ExceptionWithMessage as exc:
        raise TemplateError(f"{label}: Globals: {exc.message}") from None
    try:
        resolver = _Resolver(document, parameter_overrides or {}, region, account_id)
    except _Invalid as exc:
        raise TemplateError(f"{label}: {exc}") from None
    functions: list[FunctionSpec] = []
    skipped: list[tuple[str, str]] = []
    owners: dict[str, str] = {}  # FunctionName -> logical id
    for logical_id, resource in resources.items():
        try:
            outcome = _load_resource(
                logical_id, resource, template_globals, resolver, source.parent, region, account_id
            )
        except _Invalid as exc:
            raise TemplateError(f"{label}: resource {logical_id}: {exc}") from None
        if isinstance(outcome, str):
            skipped.append((logical_id, outcome))
            continue
        if outcome.name in owners:
            raise TemplateError(
                f"{label}: resource {logical_id}: FunctionName {outcome.name!r} is already used by "
                f"resource {owners[outcome.name]}"
            )
        owners[outcome.name] = logical_id
        functions.append(outcome)
    return Template(path=source, functions=tuple(functions), skipped=tuple(skipped))


class _Invalid(Exception):
    """A problem inside one resource; load_template adds the file and the logical id."""


class _Unresolvable(Exception):
    """A value only a deployed stack knows: Fn::GetAtt, a Ref to a resource, Fn::ImportValue, ..."""


def _decode(source: Path, label: str) -> dict[str, Any]:
    if not source.exists():
        raise TemplateError(f"{label}: template file not found")
    if not source.is_file():
        raise TemplateError(f"{label}: not a file")
    document, matches = decode(str(source))
    if matches:
        first = matches[0]
        where = "" if "line" in first.message else f"line {first.linenumber}: "
        raise TemplateError(f"{label}: cannot parse the template: {where}{first.message}")
    if not isinstance(document, dict):
        raise TemplateError(f"{label}: the template is not a mapping")
    return _plain(document)


def _plain(value: Any) -> Any:
    """cfn-lint's decoded nodes (str/dict/list subclasses carrying line marks) as plain values."""
    if isinstance(value, dict):
        return {(str(k) if isinstance(k, str) else k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _load_resource(
    logical_id: str,
    resource: Any,
    template_globals: Globals,
    resolver: _Resolver,
    base_dir: Path,
    region: str,
    account_id: str,
) -> FunctionSpec | str:
    """The function a resource defines, or the reason we skip it."""
    if logical_id.startswith("Fn::ForEach::"):
        return "Fn::ForEach (AWS::LanguageExtensions) is not supported"
    if not isinstance(resource, dict) or not isinstance(resource.get("Type"), str):
        raise _Invalid("a resource must be a mapping with a Type")
    kind = resource["Type"]
    if kind not in (SERVERLESS_FUNCTION, LAMBDA_FUNCTION):
        return f"{kind} is not supported"
    raw = resource.get("Properties") or {}
    if not isinstance(raw, dict):
        raise _Invalid("Properties must be a mapping")
    if kind == SERVERLESS_FUNCTION:
        try:
            raw = template_globals.merge(kind, raw, logical_id, resource.get("IgnoreGlobals"))
        except (ExceptionWithMessage, TypeError) as exc:
            raise _Invalid(f"cannot merge Globals: {getattr(exc, 'message', exc)}") from None
    condition = resource.get("Condition")
    if condition is not None and not resolver.condition(condition):
        return f"Condition {condition} is false"
    props = _Properties(raw, resolver)

    package_type = props.get("PackageType")
    if package_type == "Image" or (package_type is None and _has_image_uri(kind, raw)):
        return "PackageType Image is not supported yet"
    if package_type not in (None, "Zip"):
        raise _Invalid(f"PackageType must be Zip or Image, got {package_type!r}")

    code = _code_location(kind, props)
    if isinstance(code, _Skip):
        return code.reason
    runtime = props.get("Runtime")
    if runtime is None:
        raise _Invalid("Runtime is required")
    if not isinstance(runtime, str) or not runtime:
        raise _Invalid(f"Runtime must be a string, got {runtime!r}")
    handler = props.get("Handler")
    if handler is None and runtime not in _PROVIDED_RUNTIMES:
        raise _Invalid(f"Handler is required for runtime {runtime}")
    if handler is not None and (not isinstance(handler, str) or not handler):
        raise _Invalid(f"Handler must be a non-empty string, got {handler!r}")

    name = props.get("FunctionName", logical_id)
    if not isinstance(name, str) or not _FUNCTION_NAME_RE.fullmatch(name):
        raise _Invalid(f"FunctionName must be 1 to 64 letters, digits, '-' or '_', got {name!r}")
    description = props.get("Description", "")
    if isinstance(description, (dict, list)):
        raise _Invalid(f"Description must be a string, got {description!r}")
    reserved = props.get("ReservedConcurrentExecutions")
    spec = FunctionSpec(
        name=name,
        handler=handler,
        runtime=runtime,
        code_dir=_code_dir(code, base_dir, handler, runtime),
        logical_id=logical_id,
        description=_stringify(description),
        timeout=_integer(props.get("Timeout", 3), "Timeout", 1, 900, " seconds"),
        memory_size=_integer(props.get("MemorySize", 128), "MemorySize", 128, 10240, " MB"),
        ephemeral_storage=_integer(
            props.get("EphemeralStorage.Size", 512), "EphemeralStorage.Size", 512, 10240, " MB"
        ),
        environment=_environment(props),
        architectures=_architectures(props.get("Architectures", ["x86_64"])),
        reserved_concurrency=None
        if reserved is None
        else _integer(reserved, "ReservedConcurrentExecutions", 0, None, ""),
        region=region,
        account_id=account_id,
    )
    return spec


# -- code location ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Skip:
    reason: str


@dataclass(frozen=True)
class _Inline:
    source: str


def _has_image_uri(kind: str, raw: Mapping[str, Any]) -> bool:
    code = raw.get("Code")
    return "ImageUri" in raw if kind == SERVERLESS_FUNCTION else isinstance(code, dict) and "ImageUri" in code


def _code_location(kind: str, props: _Properties) -> str | _Inline | _Skip:
    """A local path (relative to the template), inline source, or why the code is out of reach."""
    if kind == SERVERLESS_FUNCTION:
        inline, uri = props.get("InlineCode"), props.get("CodeUri")
        if inline is not None and uri is not None:
            raise _Invalid("only one of InlineCode and CodeUri can be set")
        if inline is not None:
            if not isinstance(inline, str):
                raise _Invalid(f"InlineCode must be a string, got {type(inline).__name__}")
            return _Inline(inline)
        key, code = "CodeUri", "." if uri is None else uri
    else:
        key, code = "Code", props.get("Code", ".")
        if isinstance(code, dict) and "ZipFile" in code:
            if not isinstance(code["ZipFile"], str):
                raise _Invalid("Code.ZipFile must be a string")
            return _Inline(code["ZipFile"])
    if isinstance(code, str):
        if code.startswith("s3://"):
            return _Skip(f"{key} {code} is on S3; only local code is supported")
        if not code:
            raise _Invalid(f"{key} must not be empty")
        return code
    if isinstance(code, dict) and ({"Bucket", "S3Bucket"} & code.keys()):
        return _Skip(f"{key} is an S3 location; only local code is supported")
    raise _Invalid(f"{key} must be a local path, got {code!r}")


def _code_dir(code: str | _Inline, base_dir: Path, handler: str | None, runtime: str) -> Path:
    if isinstance(code, _Inline):
        return _inline_code_dir(code.source, handler, runtime)
    where = (base_dir / code).resolve()
    if not where.exists():
        raise _Invalid(f"code path {code!r} does not exist ({where})")
    if not where.is_dir():
        raise _Invalid(f"code path {code!r} is not a directory ({where})")
    return where


def _inline_code_dir(source: str, handler: str | None, runtime: str) -> Path:
    """Write inline code once, content-addressed, to a private folder under the system temp dir."""
    if runtime.startswith("python"):
        extension = ".py"
    elif runtime.startswith("nodejs"):
        extension = ".js"
    else:
        raise _Invalid(f"inline code is only supported for python and nodejs runtimes, got {runtime}")
    module = (handler or "").rpartition(".")[0]
    if not _HANDLER_MODULE_RE.fullmatch(module):
        raise _Invalid(f"Handler must look like module.function for inline code, got {handler!r}")
    filename = module.replace(".", "/") + extension if extension == ".py" else module + extension
    digest = hashlib.sha256(f"{filename}\0{source}".encode()).hexdigest()[:32]
    root = Path(tempfile.gettempdir()) / f"sandbox-runtime-{os.getuid()}"
    target = root / "inline" / digest
    if (target / filename).is_file():
        return target
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        raise _Invalid(f"cannot write inline code: {root} is not a private folder of this user")
    (root / "inline").mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root / "inline"))
    staging.chmod(0o755)  # readable from inside a sandbox that maps to another uid, like a project folder
    (staging / filename).parent.mkdir(parents=True, exist_ok=True)
    (staging / filename).write_text(source, encoding="utf-8")
    try:
        staging.rename(target)
    except OSError:  # another loader wrote the same code first
        shutil.rmtree(staging, ignore_errors=True)
    return target


# -- property values --------------------------------------------------------------------------------


class _Properties:
    """One resource's properties (after Globals), each resolved when read."""

    def __init__(self, raw: Mapping[str, Any], resolver: _Resolver) -> None:
        self._raw = raw
        self._resolver = resolver

    def get(self, dotted: str, default: Any = None, *, lenient: bool = False) -> Any:
        """The resolved value at `Key` or `Key.Sub`, or `default` when absent or AWS::NoValue."""
        key, _, rest = dotted.partition(".")
        try:
            value = self._resolver.resolve(self._raw[key], lenient=lenient) if key in self._raw else None
        except _Unresolvable as exc:
            raise _Invalid(f"{key}: {exc}") from None
        except _Invalid as exc:
            raise _Invalid(f"{key}: {exc}") from None
        if rest and value is not None and value is not _NO_VALUE:
            if not isinstance(value, dict):
                raise _Invalid(f"{key} must be a mapping, got {value!r}")
            value = value.get(rest)
        return default if value is None or value is _NO_VALUE else value


def _environment(props: _Properties) -> dict[str, str]:
    """Environment.Variables, stringified like SAM: unresolvable values become empty strings."""
    environment = props.get("Environment", {}, lenient=True)
    if not isinstance(environment, dict):
        raise _Invalid(f"Environment must be a mapping, got {environment!r}")
    variables = environment.get("Variables")
    if variables is None or variables is _NO_VALUE:
        return {}
    if not isinstance(variables, dict):
        raise _Invalid(f"Environment.Variables must be a mapping, got {variables!r}")
    return {str(key): _stringify(value) for key, value in variables.items() if value is not _NO_VALUE}


def _stringify(value: Any) -> str:
    """SAM's `_stringify_value`: booleans lower-case, lists/dicts/None/unresolved empty, others str()."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _integer(value: Any, key: str, low: int, high: int | None, unit: str) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value))
    ):
        raise _Invalid(f"{key} must be an integer, got {value!r}")
    number = int(value)
    if high is None and number < low:
        raise _Invalid(f"{key} must be at least {low}, got {number}")
    if high is not None and not low <= number <= high:
        raise _Invalid(f"{key} must be between {low} and {high}{unit}, got {number}")
    return number


def _architectures(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) != 1 or value[0] not in _ARCHITECTURES:
        raise _Invalid(f"Architectures must be a list of one of {', '.join(_ARCHITECTURES)}, got {value!r}")
    return (value[0],)


# -- intrinsic functions ----------------------------------------------------------------------------


class _Resolver:
    """Evaluates intrinsics against parameters, pseudo parameters, Mappings and Conditions.

    Parameters are looked up only when referenced, so a parameter without a value is an error only
    where a property we read needs it.
    """

    def __init__(
        self, document: Mapping[str, Any], overrides: Mapping[str, str], region: str, account_id: str
    ) -> None:
        partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if "-gov-" in region else "aws"
        self._pseudo: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::StackName": "local",
            "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{account_id}:{_STACK_ID_SUFFIX}",
            "AWS::Partition": partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self._parameters = _section(document, "Parameters")
        self._mappings = _section(document, "Mappings")
        self._conditions = _section(document, "Conditions")
        self._resources = document.get("Resources") or {}
        self._overrides = overrides
        self._decided: dict[str, bool] = {}
        self._deciding: set[str] = set()

    def resolve(self, value: Any, *, lenient: bool = False) -> Any:
        """`value` with every intrinsic evaluated. Lenient: unresolvable intrinsics become None."""
        if _is_intrinsic(value):
            try:
                fn, arg = next(iter(value.items()))
                if fn == "Fn::If":  # resolve the chosen branch with the caller's leniency
                    return self.resolve(self._if(arg), lenient=lenient)
                return self._evaluate(fn, arg)
            except _Unresolvable:
                if lenient:
                    return None
                raise
        if isinstance(value, dict):
            items = ((k, self.resolve(v, lenient=lenient)) for k, v in value.items())
            return {k: v for k, v in items if v is not _NO_VALUE}
        if isinstance(value, list):
            items_ = (self.resolve(v, lenient=lenient) for v in value)
            return [v for v in items_ if v is not _NO_VALUE]
        return value

    def condition(self, name: Any) -> bool:
        if not isinstance(name, str) or name not in self._conditions:
            raise _Invalid(f"Condition {name!r} is not defined in Conditions")
        if name not in self._decided:
            if name in self._deciding:
                raise _Invalid(f"Condition {name} depends on itself")
            self._deciding.add(name)
            try:
                self._decided[name] = self._truth(self._conditions[name])
            except _Unresolvable as exc:
                raise _Invalid(f"Condition {name}: {exc}") from None
            finally:
                self._deciding.discard(name)
        return self._decided[name]

    def _truth(self, expr: Any) -> bool:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise _Invalid(f"invalid condition {expr!r}")
        fn, arg = next(iter(expr.items()))
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
            left, right = (_scalar_text(self.resolve(v)) for v in arg)
            return left == right
        if fn == "Fn::Not" and isinstance(arg, list) and len(arg) == 1:
            return not self._truth(arg[0])
        if fn in ("Fn::And", "Fn::Or") and isinstance(arg, list):
            outcomes = [self._truth(v) for v in arg]
            return all(outcomes) if fn == "Fn::And" else any(outcomes)
        raise _Invalid(f"invalid condition {expr!r}")

    def _if(self, arg: Any) -> Any:
        if not isinstance(arg, list) or len(arg) != 3:
            raise _Invalid("Fn::If takes [condition, value if true, value if false]")
        return arg[1] if self.condition(arg[0]) else arg[2]

    def _evaluate(self, fn: str, arg: Any) -> Any:
        if fn == "Ref":
            return self._ref(arg)
        if fn == "Fn::Sub":
            return self._sub(arg)
        if fn == "Fn::Join":
            if not isinstance(arg, list) or len(arg) != 2:
                raise _Invalid("Fn::Join takes [delimiter, list]")
            delimiter, items = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(delimiter, str) or not isinstance(items, list):
                raise _Invalid("Fn::Join takes [delimiter, list]")
            return delimiter.join(_scalar_text(item) for item in items)
        if fn == "Fn::Select":
            if not isinstance(arg, list) or len(arg) != 2:
                raise _Invalid("Fn::Select takes [index, list]")
            index, items = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(items, list) or not str(index).isdigit() or int(index) >= len(items):
                raise _Invalid(f"Fn::Select index {index!r} is out of range")
            return items[int(index)]
        if fn == "Fn::Split":
            if not isinstance(arg, list) or len(arg) != 2:
                raise _Invalid("Fn::Split takes [delimiter, string]")
            delimiter, text = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(delimiter, str) or not isinstance(text, str):
                raise _Invalid("Fn::Split takes [delimiter, string]")
            return text.split(delimiter)
        if fn == "Fn::FindInMap":
            return self._find_in_map(arg)
        if fn == "Fn::Base64":
            return base64.b64encode(_scalar_text(self.resolve(arg)).encode()).decode()
        raise _Unresolvable(f"{fn} cannot be resolved locally")

    def _ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if not isinstance(name, str):
            raise _Invalid(f"Ref takes a name, got {name!r}")
        if name in self._pseudo or name in self._parameters:
            return self._parameter(name)
        if name in self._resources:
            raise _Unresolvable(f"Ref to resource {name} cannot be resolved locally")
        raise _Invalid(f"Ref to {name}, which is neither a parameter nor a resource")

    def _parameter(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        declared = self._parameters[name]
        if not isinstance(declared, dict):
            raise _Invalid(f"parameter {name} must be a mapping")
        kind = str(declared.get("Type", "String"))
        if kind.startswith("AWS::SSM::Parameter::"):
            raise _Unresolvable(f"parameter {name} is an SSM parameter, which cannot be read locally")
        if name in self._overrides:
            value = self._overrides[name]
        elif "Default" in declared:
            value = declared["Default"]
        else:
            raise _Invalid(f"parameter {name} has no Default and no value in parameter_overrides")
        if isinstance(value, list):
            value = ",".join(_scalar_text(v) for v in value)
        text = _scalar_text(value)
        is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
        allowed = declared.get("AllowedValues")
        if isinstance(allowed, list):
            choices = [_scalar_text(v) for v in allowed]
            for item in text.split(",") if is_list else [text]:
                if item not in choices:
                    raise _Invalid(f"parameter {name}: {item!r} is not one of {choices}")
        return text.split(",") if is_list else text

    def _sub(self, arg: Any) -> str:
        """Fn::Sub: samtranslator substitutes the `${Name}` references we can give a value to."""
        text, local = (arg, {}) if isinstance(arg, str) else _sub_pair(arg)
        values: dict[str, str] = {}
        for name in set(_SUB_REF_RE.findall(text)):
            if name in local:
                value = self.resolve(local[name])
            elif name in self._pseudo or name in self._parameters:
                value = self._parameter(name)
            elif "." in name or name in self._resources:
                raise _Unresolvable(f"${{{name}}} cannot be resolved locally")
            else:
                raise _Invalid(f"Fn::Sub references ${{{name}}}, which is neither a parameter nor a resource")
            if isinstance(value, (dict, list)):
                raise _Invalid(f"Fn::Sub cannot insert the list or mapping ${{{name}}}")
            values[name] = _scalar_text(value)
        result = IntrinsicsResolver(values).resolve_parameter_refs({"Fn::Sub": text})["Fn::Sub"]
        if leftover := _SUB_REF_RE.search(result):
            raise _Invalid(f"Fn::Sub cannot substitute {leftover.group(0)}")
        return str(result).replace("${!", "${")

    def _find_in_map(self, arg: Any) -> Any:
        if not isinstance(arg, list) or len(arg) not in (3, 4):
            raise _Invalid("Fn::FindInMap takes [map, top-level key, second-level key]")
        keys = [_scalar_text(self.resolve(v)) for v in arg[:3]]
        mapping = self._mappings.get(keys[0])
        top = mapping.get(keys[1]) if isinstance(mapping, dict) else None
        if isinstance(top, dict) and keys[2] in top:
            return self.resolve(top[keys[2]])
        if len(arg) == 4 and isinstance(arg[3], dict) and "DefaultValue" in arg[3]:
            return self.resolve(arg[3]["DefaultValue"])
        raise _Invalid(f"Fn::FindInMap: Mappings has no {'/'.join(keys)}")


def _section(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name) or {}
    if not isinstance(value, dict):
        raise _Invalid(f"{name} must be a mapping")
    return value


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return isinstance(key, str) and (key == "Ref" or key.startswith("Fn::"))


def _sub_pair(arg: Any) -> tuple[str, dict[str, Any]]:
    if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict)):
        raise _Invalid("Fn::Sub takes a string or [string, {name: value}]")
    return arg[0], arg[1]


def _scalar_text(value: Any) -> str:
    """A resolved scalar as CloudFormation sees it: a string."""
    if value is _NO_VALUE or isinstance(value, (dict, list)):
        raise _Invalid(f"expected a string, got {value!r}")
    return _stringify(value)
