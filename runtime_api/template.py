"""The SAM template loader: a template.yaml (or .json) in, the FunctionSpecs the service runs out.

It reads a template the way `sam local start-lambda` does: cfn-lint's decoder parses YAML and JSON
with the short-form tags, aws-sam-translator's Globals merges `Globals.Function` into each
`AWS::Serverless::Function`, and intrinsics are evaluated against parameters and pseudo parameters
for the properties we read. Layers (`AWS::Serverless::LayerVersion`, `AWS::Lambda::LayerVersion`) with
local content are resolved for the functions that list them. Everything else in the template is ignored
or listed as skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from cfnlint.decode import decode
from samtranslator.model.exceptions import ExceptionWithMessage
from samtranslator.plugins.globals.globals import Globals

from .functions import ISOLATIONS, FunctionSpec, ImageConfig
from .intrinsics import NO_VALUE, IntrinsicResolver, InvalidValue, Unresolvable, stringify

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"
LAMBDA_LAYER = "AWS::Lambda::LayerVersion"
_MAX_LAYERS = 5  # Lambda's limit per function

_ARCHITECTURES = ("x86_64", "arm64")
_PROVIDED_RUNTIMES = ("provided", "provided.al2", "provided.al2023")
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_HANDLER_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:[./][A-Za-z_][A-Za-z0-9_-]*)*")
_LAYER_ARN_RE = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:(?P<account>\d{12}):layer:(?P<name>[a-zA-Z0-9_-]{1,140})(?::\d+)?"
)


class TemplateError(Exception):
    """A template we cannot serve. The message names the file and, when relevant, resource and property."""


@dataclass(frozen=True)
class TemplateLayer:
    """A layer version the template defines with local content."""

    logical_id: str
    name: str  # LayerName (the logical id when the template gives none)
    content_dir: Path  # absolute host path of ContentUri / Content


@dataclass(frozen=True)
class Template:
    path: Path
    functions: tuple[FunctionSpec, ...]
    skipped: tuple[tuple[str, str], ...]  # (logical_id, reason) for resources we do not run
    layers: tuple[TemplateLayer, ...] = ()
    # (function logical id, the layer as the template lists it, why it is left out): the function runs
    # without these layers.
    skipped_layers: tuple[tuple[str, str, str], ...] = ()


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
        resolver = IntrinsicResolver(document, parameter_overrides or {}, region, account_id)
    except InvalidValue as exc:
        raise TemplateError(f"{label}: {exc}") from None
    functions: list[FunctionSpec] = []
    skipped: list[tuple[str, str]] = []
    owners: dict[str, str] = {}  # FunctionName -> logical id
    # Layers first: functions refer to them.
    layers = _Layers(resources, resolver, account_id)
    for logical_id, resource in resources.items():
        if isinstance(resource, dict) and resource.get("Type") in (SERVERLESS_LAYER, LAMBDA_LAYER):
            try:
                layers.add(logical_id, resource, source.parent)
            except InvalidValue as exc:
                raise TemplateError(f"{label}: resource {logical_id}: {exc}") from None
    for logical_id, resource in resources.items():
        if logical_id in layers.skipped:
            skipped.append((logical_id, layers.skipped[logical_id]))
            continue
        if logical_id in layers.loaded:
            continue
        try:
            outcome = _load_resource(
                logical_id, resource, template_globals, resolver, source.parent, region, account_id, layers
            )
        except InvalidValue as exc:
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
    return Template(
        path=source,
        functions=tuple(functions),
        skipped=tuple(skipped),
        layers=tuple(layers.loaded.values()),
        skipped_layers=tuple(layers.left_out),
    )


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
    resolver: IntrinsicResolver,
    base_dir: Path,
    region: str,
    account_id: str,
    layers: _Layers,
) -> FunctionSpec | str:
    """The function a resource defines, or the reason we skip it."""
    if not isinstance(logical_id, str):
        # YAML 1.1 reads unquoted On/Off/Yes/No/True/False keys as booleans.
        raise InvalidValue("the logical id must be a string (quote it: YAML reads On/Off/Yes/No as booleans)")
    if logical_id.startswith("Fn::ForEach::"):
        return "Fn::ForEach (AWS::LanguageExtensions) is not supported"
    if not isinstance(resource, dict) or not isinstance(resource.get("Type"), str):
        raise InvalidValue("a resource must be a mapping with a Type")
    kind = resource["Type"]
    if kind not in (SERVERLESS_FUNCTION, LAMBDA_FUNCTION):
        return f"{kind} is not supported"
    raw = resource.get("Properties") or {}
    if not isinstance(raw, dict):
        raise InvalidValue("Properties must be a mapping")
    if kind == SERVERLESS_FUNCTION:
        try:
            raw = template_globals.merge(kind, raw, logical_id, resource.get("IgnoreGlobals"))
        except (ExceptionWithMessage, TypeError) as exc:
            raise InvalidValue(f"cannot merge Globals: {getattr(exc, 'message', exc)}") from None
    condition = resource.get("Condition")
    if condition is not None and not resolver.condition(condition):
        return f"Condition {condition} is false"
    props = _Properties(raw, resolver)

    package_type = props.get("PackageType")
    if package_type is None:
        package_type = "Image" if _has_image_uri(kind, raw) else "Zip"
    if package_type not in ("Zip", "Image"):
        raise InvalidValue(f"PackageType must be Zip or Image, got {package_type!r}")
    metadata = _sandbox_metadata(resource, resolver)

    image_uri: str | None = None
    image_config = ImageConfig()
    code_dir: Path | None = None
    if package_type == "Image":
        # Runtime and Handler mean nothing for an image (CloudFormation refuses them; sam ignores them).
        runtime, handler = "", None
        image_uri = _image_uri(kind, props, resource, logical_id)
        image_config = _image_config(props)
    else:
        code = _code_location(kind, props)
        if isinstance(code, _Skip):
            return code.reason
        runtime = props.get("Runtime")
        if runtime is None:
            raise InvalidValue("Runtime is required")
        if not isinstance(runtime, str) or not runtime:
            raise InvalidValue(f"Runtime must be a string, got {runtime!r}")
        handler = props.get("Handler")
        if handler is None and runtime not in _PROVIDED_RUNTIMES:
            raise InvalidValue(f"Handler is required for runtime {runtime}")
        if handler is not None and (not isinstance(handler, str) or not handler):
            raise InvalidValue(f"Handler must be a non-empty string, got {handler!r}")
        code_dir = _code_dir(code, base_dir, handler, runtime)

    name = props.get("FunctionName", logical_id)
    if not isinstance(name, str) or not _FUNCTION_NAME_RE.fullmatch(name):
        raise InvalidValue(f"FunctionName must be 1 to 64 letters, digits, '-' or '_', got {name!r}")
    description = props.get("Description", "")
    if isinstance(description, (dict, list)):
        raise InvalidValue(f"Description must be a string, got {description!r}")
    reserved = props.get("ReservedConcurrentExecutions")
    allow_network = metadata.get("AllowNetwork")
    if allow_network is not None and not isinstance(allow_network, bool):
        raise InvalidValue(f"Metadata.SandboxRuntime.AllowNetwork must be true or false, got {allow_network!r}")
    isolation = metadata.get("Isolation")
    if isolation is not None and isolation not in ISOLATIONS:
        choices = ", ".join(ISOLATIONS)
        raise InvalidValue(f"Metadata.SandboxRuntime.Isolation must be one of {choices}, got {isolation!r}")
    if package_type == "Image" and isolation == "bwrap":
        raise InvalidValue("PackageType Image functions run on the docker isolation, not bwrap")
    input_schema = _input_schema(metadata.get("InputSchema"))
    layer_dirs = layers.for_function(logical_id, raw.get("Layers"), image=package_type == "Image")
    spec = FunctionSpec(
        name=name,
        handler=handler,
        runtime=runtime,
        code_dir=code_dir,
        logical_id=logical_id,
        description=stringify(description),
        timeout=_integer(props.get("Timeout", 3), "Timeout", 1, 900, " seconds"),
        memory_size=_integer(props.get("MemorySize", 128), "MemorySize", 128, 10240, " MB"),
        ephemeral_storage=_integer(props.get("EphemeralStorage.Size", 512), "EphemeralStorage.Size", 512, 10240, " MB"),
        environment=_environment(props),
        layers=layer_dirs,
        architectures=_architectures(props.get("Architectures", ["x86_64"])),
        log_format=_choice(props.get("LoggingConfig.LogFormat", "Text"), "LoggingConfig.LogFormat", _LOG_FORMATS),
        application_log_level=None
        if (level := props.get("LoggingConfig.ApplicationLogLevel")) is None
        else _choice(level, "LoggingConfig.ApplicationLogLevel", _LOG_LEVELS),
        reserved_concurrency=None
        if reserved is None
        else _integer(reserved, "ReservedConcurrentExecutions", 0, None, ""),
        allow_network=allow_network,
        isolation=isolation,
        input_schema=input_schema,
        package_type=package_type,
        image_uri=image_uri,
        image_config=image_config,
        region=region,
        account_id=account_id,
    )
    return spec


def _sandbox_metadata(resource: Mapping[str, Any], resolver: IntrinsicResolver) -> dict[str, Any]:
    """Our own per-function settings, under the resource's free-form Metadata (CloudFormation and SAM
    carry Metadata through untouched, so a template using them still deploys)."""
    metadata = resource.get("Metadata") or {}
    settings = metadata.get("SandboxRuntime") if isinstance(metadata, dict) else None
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise InvalidValue("Metadata.SandboxRuntime must be a mapping")
    resolved = resolver.resolve(settings)
    return resolved if isinstance(resolved, dict) else {}


def _input_schema(schema: Any) -> dict[str, Any] | None:
    """Metadata.SandboxRuntime.InputSchema: a JSON Schema of the function's event, which MCP clients see as
    the function's tool input schema. MCP tool arguments are a JSON object, so the schema describes one."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidValue(f"Metadata.SandboxRuntime.InputSchema must be a JSON Schema mapping, got {schema!r}")
    if schema.get("type", "object") != "object":
        raise InvalidValue(
            "Metadata.SandboxRuntime.InputSchema must describe an object (type: object): "
            f"MCP tool arguments are a JSON object, got type {schema.get('type')!r}"
        )
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        raise InvalidValue(
            f"Metadata.SandboxRuntime.InputSchema is not a valid JSON Schema: {exc.message}"
            + (f" (at {where})" if where else "")
        ) from None
    return {"type": "object", **schema}


# -- layers -----------------------------------------------------------------------------------------


class _Layers:
    """The template's layer versions, and each function's `Layers` resolved to their content folders."""

    def __init__(self, resources: Mapping[str, Any], resolver: IntrinsicResolver, account: str) -> None:
        self._resources = resources
        self._resolver = resolver
        self._account = account
        self.loaded: dict[str, TemplateLayer] = {}
        self.skipped: dict[str, str] = {}  # layer logical id -> why it is not loaded
        self.left_out: list[tuple[str, str, str]] = []  # (function, layer as listed, why)

    def add(self, logical_id: str, resource: Mapping[str, Any], base_dir: Path) -> None:
        outcome = self._load(logical_id, resource, base_dir)
        if isinstance(outcome, str):
            self.skipped[logical_id] = outcome
        else:
            self.loaded[logical_id] = outcome

    def _load(self, logical_id: str, resource: Mapping[str, Any], base_dir: Path) -> TemplateLayer | str:
        if not isinstance(logical_id, str):
            raise InvalidValue("the logical id must be a string (quote it: YAML reads On/Off/Yes/No as booleans)")
        kind = resource["Type"]
        condition = resource.get("Condition")
        if condition is not None and not self._resolver.condition(condition):
            return f"Condition {condition} is false"
        raw = resource.get("Properties") or {}
        if not isinstance(raw, dict):
            raise InvalidValue("Properties must be a mapping")
        props = _Properties(raw, self._resolver)
        key = "ContentUri" if kind == SERVERLESS_LAYER else "Content"
        content = props.get(key)
        if content is None:
            raise InvalidValue(f"{key} is required")
        if isinstance(content, dict) and ({"Bucket", "S3Bucket"} & content.keys()):
            return f"{key} is an S3 location; only local layer content is supported"
        if not isinstance(content, str) or not content:
            raise InvalidValue(f"{key} must be a local path, got {content!r}")
        if content.startswith("s3://"):
            return f"{key} {content} is on S3; only local layer content is supported"
        where = (base_dir / content).resolve()
        if not where.exists():
            raise InvalidValue(f"layer path {content!r} does not exist ({where})")
        if not where.is_dir():
            raise InvalidValue(f"layer path {content!r} is not a directory ({where})")
        name = props.get("LayerName", logical_id)
        if not isinstance(name, str) or not name:
            raise InvalidValue(f"LayerName must be a string, got {name!r}")
        return TemplateLayer(logical_id=logical_id, name=name, content_dir=where)

    def for_function(self, function: str, raw: Any, *, image: bool) -> tuple[Path, ...]:
        """The content folders of a function's `Layers` (after Globals), in order. Layers that only AWS
        has (other ARNs, values only a deployed stack knows) are left out and recorded in `left_out`."""
        listed = self._pick(raw)
        if listed is None or listed is NO_VALUE:
            return ()
        if not isinstance(listed, list):
            raise InvalidValue(f"Layers must be a list, got {listed!r}")
        pairs = [(entry, item) for entry in listed if (item := self._pick(entry)) is not NO_VALUE]
        if pairs and image:
            raise InvalidValue("Layers are not supported for PackageType Image functions (Lambda refuses them)")
        if len(pairs) > _MAX_LAYERS:
            raise InvalidValue(f"Layers: a function can use at most {_MAX_LAYERS} layers, got {len(pairs)}")
        folders = [self._folder(function, entry, item) for entry, item in pairs]
        return tuple(folder for folder in folders if folder is not None)

    def _folder(self, function: str, entry: Any, item: Any) -> Path | None:
        if isinstance(item, dict) and set(item) == {"Ref"}:
            target = item["Ref"]
            if target in self.loaded:
                return self.loaded[target].content_dir
            if target in self.skipped:
                self.left_out.append((function, target, f"layer {target} is not loaded: {self.skipped[target]}"))
                return None
            kind = self._resources[target].get("Type") if isinstance(self._resources[target], dict) else None
            raise InvalidValue(f"Layers: Ref {target} is a {kind}, not a layer version")
        if item is None:  # only a deployed stack knows it (Fn::GetAtt, Fn::ImportValue, SSM, ...)
            self.left_out.append((function, _render(entry), "it cannot be resolved locally"))
            return None
        if not isinstance(item, str) or not (match := _LAYER_ARN_RE.fullmatch(item)):
            raise InvalidValue(f"Layers: expected a layer version ARN or a Ref to a layer, got {item!r}")
        if match["account"] == self._account:
            for layer in self.loaded.values():
                if layer.name == match["name"]:
                    return layer.content_dir
        self.left_out.append((function, item, "it is not a layer of this template"))
        return None

    def _pick(self, value: Any) -> Any:
        """`value` resolved, except that a Ref to a resource of the template stays a Ref (a layer's
        ARN is only known to a deployed stack) and Fn::If picks its branch first; a list is returned as
        is, for its items to be picked one by one. None: unresolvable."""
        if isinstance(value, list):
            return value
        if isinstance(value, dict) and len(value) == 1:
            fn, arg = next(iter(value.items()))
            if fn == "Ref" and isinstance(arg, str) and arg in self._resources:
                return value
            if fn == "Fn::If":
                if not isinstance(arg, list) or len(arg) != 3:
                    raise InvalidValue("Fn::If takes [condition, value if true, value if false]")
                return self._pick(arg[1] if self._resolver.condition(arg[0]) else arg[2])
        try:
            return self._resolver.resolve(value, lenient=True)
        except InvalidValue as exc:
            raise InvalidValue(f"Layers: {exc}") from None


def _render(value: Any) -> str:
    """A layer entry as the template wrote it, for messages: `Fn::GetAtt App.Outputs.LayerArn`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        fn, arg = next(iter(value.items()))
        if fn == "Fn::GetAtt" and isinstance(arg, list):
            return f"{fn} {'.'.join(str(part) for part in arg)}"
        if isinstance(arg, str):
            return f"{fn} {arg}"
    return json.dumps(value, separators=(",", ":"))


# -- code location ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Skip:
    reason: str


@dataclass(frozen=True)
class _Inline:
    source: str


def _image_uri(kind: str, props: _Properties, resource: Mapping[str, Any], logical_id: str) -> str:
    """ImageUri, or the name `sam build` gives the image it builds from Metadata.Dockerfile."""
    uri = props.get("ImageUri") if kind == SERVERLESS_FUNCTION else props.get("Code.ImageUri")
    if uri is None:
        metadata = resource.get("Metadata") or {}
        if isinstance(metadata, dict) and "Dockerfile" in metadata:
            tag = metadata.get("DockerTag") or "latest"
            return f"{logical_id.lower()}:{tag}"
        raise InvalidValue("PackageType Image needs ImageUri (or Metadata.Dockerfile, as `sam build` uses)")
    if not isinstance(uri, str) or not uri:
        raise InvalidValue(f"ImageUri must be a non-empty string, got {uri!r}")
    return uri


def _image_config(props: _Properties) -> ImageConfig:
    config = props.get("ImageConfig", {})
    if not isinstance(config, dict):
        raise InvalidValue(f"ImageConfig must be a mapping, got {config!r}")

    def strings(key: str) -> tuple[str, ...] | None:
        value = config.get(key)
        if value is None or value is NO_VALUE:
            return None
        if not isinstance(value, list) or not all(isinstance(item, (str, int, float)) for item in value):
            raise InvalidValue(f"ImageConfig.{key} must be a list of strings, got {value!r}")
        return tuple(stringify(item) for item in value)

    workdir = config.get("WorkingDirectory")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise InvalidValue(f"ImageConfig.WorkingDirectory must be an absolute path, got {workdir!r}")
    return ImageConfig(entry_point=strings("EntryPoint"), command=strings("Command"), working_directory=workdir)


def _has_image_uri(kind: str, raw: Mapping[str, Any]) -> bool:
    code = raw.get("Code")
    return "ImageUri" in raw if kind == SERVERLESS_FUNCTION else isinstance(code, dict) and "ImageUri" in code


def _code_location(kind: str, props: _Properties) -> str | _Inline | _Skip:
    """A local path (relative to the template), inline source, or why the code is out of reach."""
    if kind == SERVERLESS_FUNCTION:
        inline, uri = props.get("InlineCode"), props.get("CodeUri")
        if inline is not None and uri is not None:
            raise InvalidValue("only one of InlineCode and CodeUri can be set")
        if inline is not None:
            if not isinstance(inline, str):
                raise InvalidValue(f"InlineCode must be a string, got {type(inline).__name__}")
            return _Inline(inline)
        key, code = "CodeUri", "." if uri is None else uri
    else:
        key, code = "Code", props.get("Code", ".")
        if isinstance(code, dict) and "ZipFile" in code:
            if not isinstance(code["ZipFile"], str):
                raise InvalidValue("Code.ZipFile must be a string")
            return _Inline(code["ZipFile"])
    if isinstance(code, str):
        if code.startswith("s3://"):
            return _Skip(f"{key} {code} is on S3; only local code is supported")
        if not code:
            raise InvalidValue(f"{key} must not be empty")
        return code
    if isinstance(code, dict) and ({"Bucket", "S3Bucket"} & code.keys()):
        return _Skip(f"{key} is an S3 location; only local code is supported")
    raise InvalidValue(f"{key} must be a local path, got {code!r}")


def _code_dir(code: str | _Inline, base_dir: Path, handler: str | None, runtime: str) -> Path:
    if isinstance(code, _Inline):
        return _inline_code_dir(code.source, handler, runtime)
    where = (base_dir / code).resolve()
    if not where.exists():
        raise InvalidValue(f"code path {code!r} does not exist ({where})")
    if not where.is_dir():
        raise InvalidValue(f"code path {code!r} is not a directory ({where})")
    return where


def _inline_code_dir(source: str, handler: str | None, runtime: str) -> Path:
    """Write inline code once, content-addressed, to a private folder under the system temp dir."""
    if runtime.startswith("python"):
        extension = ".py"
    elif runtime.startswith("nodejs"):
        extension = ".js"
    else:
        raise InvalidValue(f"inline code is only supported for python and nodejs runtimes, got {runtime}")
    module = (handler or "").rpartition(".")[0]
    if not _HANDLER_MODULE_RE.fullmatch(module):
        raise InvalidValue(f"Handler must look like module.function for inline code, got {handler!r}")
    filename = module.replace(".", "/") + extension if extension == ".py" else module + extension
    digest = hashlib.sha256(f"{filename}\0{source}".encode()).hexdigest()[:32]
    root = Path(tempfile.gettempdir()) / f"sandbox-runtime-{os.getuid()}"
    target = root / "inline" / digest
    if (target / filename).is_file():
        return target
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        raise InvalidValue(f"cannot write inline code: {root} is not a private folder of this user")
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

    def __init__(self, raw: Mapping[str, Any], resolver: IntrinsicResolver) -> None:
        self._raw = raw
        self._resolver = resolver

    def get(self, dotted: str, default: Any = None, *, lenient: bool = False) -> Any:
        """The resolved value at `Key` or `Key.Sub`, or `default` when absent or AWS::NoValue."""
        key, _, rest = dotted.partition(".")
        try:
            value = self._resolver.resolve(self._raw[key], lenient=lenient) if key in self._raw else None
        except Unresolvable as exc:
            raise InvalidValue(f"{key}: {exc}") from None
        except InvalidValue as exc:
            raise InvalidValue(f"{key}: {exc}") from None
        if rest and value is not None and value is not NO_VALUE:
            if not isinstance(value, dict):
                raise InvalidValue(f"{key} must be a mapping, got {value!r}")
            value = value.get(rest)
        return default if value is None or value is NO_VALUE else value


def _environment(props: _Properties) -> dict[str, str]:
    """Environment.Variables, stringified like SAM: unresolvable values become empty strings."""
    environment = props.get("Environment", {}, lenient=True)
    if not isinstance(environment, dict):
        raise InvalidValue(f"Environment must be a mapping, got {environment!r}")
    variables = environment.get("Variables")
    if variables is None or variables is NO_VALUE:
        return {}
    if not isinstance(variables, dict):
        raise InvalidValue(f"Environment.Variables must be a mapping, got {variables!r}")
    return {str(key): stringify(value) for key, value in variables.items() if value is not NO_VALUE}


def _integer(value: Any, key: str, low: int, high: int | None, unit: str) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value))
    ):
        raise InvalidValue(f"{key} must be an integer, got {value!r}")
    number = int(value)
    if high is None and number < low:
        raise InvalidValue(f"{key} must be at least {low}, got {number}")
    if high is not None and not low <= number <= high:
        raise InvalidValue(f"{key} must be between {low} and {high}{unit}, got {number}")
    return number


_LOG_FORMATS = ("Text", "JSON")
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidValue(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _architectures(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) != 1 or value[0] not in _ARCHITECTURES:
        raise InvalidValue(f"Architectures must be a list of one of {', '.join(_ARCHITECTURES)}, got {value!r}")
    return (value[0],)
