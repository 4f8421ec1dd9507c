"""The function registry: what a function is, and how names, ARNs and qualifiers find one."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .errors import InvalidParameterValueException, ResourceNotFoundException, ValidationException

LATEST = "$LATEST"

# The FunctionName pattern of the Invoke operation in the botocore model.
_FUNCTION_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)
_FUNCTION_NAME_RE = re.compile(_FUNCTION_NAME_PATTERN)
_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:"
    r"(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)
_PARTIAL_ARN_RE = re.compile(r"^(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$")


ISOLATIONS = ("bwrap", "docker")


@dataclass(frozen=True)
class ImageConfig:
    """ImageConfig of a PackageType Image function: overrides of the image's own settings."""

    entry_point: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    working_directory: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the service runs it: everything a sandbox and its bootstrap need.

    Built by the template loader (and, later, by CreateFunction). Immutable: a new
    configuration is a new spec.
    """

    name: str  # FunctionName (or the logical id when the template gives none)
    handler: str | None  # "app.handler"; None for provided.* runtimes that ignore it
    runtime: str  # "python3.12", "provided.al2023", ...; "" for PackageType Image
    code_dir: Path | None  # absolute host path of CodeUri; None for PackageType Image
    logical_id: str | None = None  # the template resource id, also addressable
    description: str = ""
    timeout: int = 3  # seconds, 1..900
    memory_size: int = 128  # MB, 128..10240
    ephemeral_storage: int = 512  # MB of /tmp, 512..10240
    environment: Mapping[str, str] = field(default_factory=dict)
    # Layer content folders (absolute host paths), in the function's order: extracted into /opt one after
    # the other, later layers overwriting earlier files, as Lambda does.
    layers: tuple[Path, ...] = ()
    architectures: tuple[str, ...] = ("x86_64",)
    reserved_concurrency: int | None = None
    log_format: str = "Text"  # LoggingConfig.LogFormat: Text | JSON
    application_log_level: str | None = None  # LoggingConfig.ApplicationLogLevel (JSON format only)
    allow_network: bool | None = None  # Metadata.SandboxRuntime.AllowNetwork; None: SANDBOX_ALLOW_NETWORK
    isolation: str | None = None  # Metadata.SandboxRuntime.Isolation; None: SANDBOX_ISOLATION (Image: docker)
    # Metadata.SandboxRuntime.InputSchema: a JSON Schema of the event, the function's MCP tool input schema
    # (`mcp_server`); None: any JSON object.
    input_schema: Mapping[str, Any] | None = None
    package_type: str = "Zip"  # Zip | Image
    image_uri: str | None = None  # PackageType Image: the image, which must be on the Docker engine
    image_config: ImageConfig = field(default_factory=ImageConfig)
    region: str = "us-east-1"
    account_id: str = "123456789012"
    version: str = LATEST  # "$LATEST", or the number PublishVersion gave this snapshot

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"

    @property
    def key(self) -> str:
        """What identifies this function version among all (its pool): the name for $LATEST, else
        name:version."""
        return self.name if self.version == LATEST else f"{self.name}:{self.version}"

    def qualified_arn(self, qualifier: str = LATEST) -> str:
        return f"{self.arn}:{qualifier}"


@dataclass(frozen=True)
class FunctionRef:
    """A parsed FunctionName path label: the name plus whatever the caller qualified it with."""

    name: str
    qualifier: str | None
    region: str | None = None
    account_id: str | None = None


@functools.lru_cache(maxsize=1024)  # every invoke parses its name: the same few, over and over
def parse_function_name(raw: str, qualifier: str | None = None) -> FunctionRef:
    """Parse a name, `name:qualifier`, partial ARN or full ARN, as the Invoke API accepts them."""
    value = unquote(raw)
    if not 1 <= len(value) <= 256 or not _FUNCTION_NAME_RE.fullmatch(value):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {_FUNCTION_NAME_PATTERN}"
        )
    region = account = None
    if match := _ARN_RE.match(value):
        name, derived = match["name"], match["qualifier"]
        region, account = match["region"], match["account"]
    elif match := _PARTIAL_ARN_RE.match(value):
        name, derived, account = match["name"], match["qualifier"], match["account"]
    else:
        name, _, derived = value.partition(":")
        derived = derived or None
    if qualifier is not None and derived is not None and qualifier != derived:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(name=name, qualifier=qualifier or derived, region=region, account_id=account)


@dataclass(frozen=True)
class Alias:
    """An alias: a name for one version, optionally sending a share of invocations to another."""

    name: str
    function_version: str
    description: str = ""
    weights: Mapping[str, float] = field(default_factory=dict)  # RoutingConfig.AdditionalVersionWeights
    revision_id: str = ""

    def pick(self, draw: float) -> str:
        """The version an invocation runs, for a uniform draw in [0, 1)."""
        for version, weight in self.weights.items():
            if draw < weight:
                return version
            draw -= weight
        return self.function_version


class FunctionRegistry:
    """Functions by name and by template logical id; their published versions and aliases."""

    def __init__(
        self,
        functions: Iterable[FunctionSpec] = (),
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._by_name: dict[str, FunctionSpec] = {}
        self._by_logical_id: dict[str, FunctionSpec] = {}
        self._versions: dict[str, dict[str, FunctionSpec]] = {}  # name -> published number -> spec
        self._aliases: dict[str, dict[str, Alias]] = {}  # name -> alias name -> alias
        for spec in functions:
            self.add(spec)

    def add(self, spec: FunctionSpec) -> None:
        """Add or replace a function's $LATEST."""
        self._by_name[spec.name] = spec
        if spec.logical_id:
            self._by_logical_id[spec.logical_id] = spec

    def remove(self, name: str) -> list[FunctionSpec]:
        """Remove a function with its versions and aliases; every spec that was removed."""
        spec = self._by_name.pop(name)
        if spec.logical_id and self._by_logical_id.get(spec.logical_id) is spec:
            del self._by_logical_id[spec.logical_id]
        self._aliases.pop(name, None)
        return [spec, *self._versions.pop(name, {}).values()]

    def publish(self, spec: FunctionSpec) -> None:
        self._versions.setdefault(spec.name, {})[spec.version] = spec

    def unpublish(self, name: str, version: str) -> FunctionSpec:
        return self._versions[name].pop(version)

    def versions(self, name: str) -> list[FunctionSpec]:
        """Published versions, oldest first."""
        return sorted(self._versions.get(name, {}).values(), key=lambda spec: int(spec.version))

    def version(self, name: str, version: str) -> FunctionSpec | None:
        if version == LATEST:
            return self._by_name.get(name)
        return self._versions.get(name, {}).get(version)

    def aliases(self, name: str) -> dict[str, Alias]:
        return self._aliases.setdefault(name, {})

    def all_specs(self) -> list[FunctionSpec]:
        """Every runnable spec: each function's $LATEST and its published versions."""
        return [*self._by_name.values(), *(spec for versions in self._versions.values() for spec in versions.values())]

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> FunctionSpec | None:
        return self._by_name.get(name) or self._by_logical_id.get(name)

    def resolve(self, ref: FunctionRef) -> tuple[FunctionSpec, str]:
        """The function and the version a reference points at, or ResourceNotFoundException."""
        qualifier = ref.qualifier or LATEST
        if ref.region is not None and ref.region != self.region:
            raise ResourceNotFoundException(
                f"Functions from '{ref.region}' are not reachable in this region ('{self.region}')"
            )
        spec = self.get(ref.name) if len(ref.name) <= 64 else None
        if spec is None or (ref.account_id is not None and ref.account_id != spec.account_id):
            account = ref.account_id or self.account_id
            raise ResourceNotFoundException(
                f"Function not found: arn:aws:lambda:{self.region}:{account}:function:{ref.name}:{qualifier}"
            )
        if qualifier == LATEST:
            return spec, LATEST
        alias = self._aliases.get(spec.name, {}).get(qualifier)
        version = alias.pick(random.random()) if alias is not None else qualifier
        published = self._versions.get(spec.name, {}).get(version)
        if published is None:
            raise ResourceNotFoundException(f"Function not found: {spec.qualified_arn(qualifier)}")
        return published, version
