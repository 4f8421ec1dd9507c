"""The Lambda control plane: the operations boto3, the AWS CLI, SAM and Terraform call to manage
functions, their versions, aliases, concurrency, tags and asynchronous invocation settings.

`ControlPlane` holds the state (the registry's specs, the catalog's metadata, the store on disk) and
performs each operation; `routes()` maps the REST API onto it. Shapes, status codes and messages
follow reference/invoke-api.md §3. A function created or changed here is prepared in the background
(State Pending → Active, LastUpdateStatus InProgress → Successful), as on Lambda, so that waiters and
Terraform see the transitions they poll for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import errno
import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import code
from .catalog import (
    Entry,
    Meta,
    Store,
    entry_document,
    entry_from_document,
    new_revision,
    now_timestamp,
    template_meta,
)
from .errors import (
    CodeStorageExceededException,
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaServiceError,
    PreconditionFailedException,
    RequestTooLargeException,
    ResourceConflictException,
    ResourceNotFoundException,
    ServiceException,
    ValidationException,
)
from .functions import LATEST, Alias, FunctionRegistry, FunctionSpec, ImageConfig, parse_function_name
from .logs import get_logger

log = get_logger("control")

_ROLE_PATTERN = r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
_ALIAS_PATTERN = r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
_NAME_RE = re.compile(r"[a-zA-Z0-9-_]{1,64}")
_MAX_REQUEST_BYTES = 69_905_067  # "Request must be smaller than 69905067 bytes for the CreateFunction operation"
_MAX_ENVIRONMENT_BYTES = 4096
_MAX_IMAGE_ARGUMENTS = 1500  # Lambda's limits on ImageConfig: items of EntryPoint and of Command,
_MAX_WORKING_DIRECTORY_CHARS = 1000  # and WorkingDirectory's length
_PAGE = 50
ACCOUNT_CONCURRENCY = 1000
_MIN_UNRESERVED = 100
_CREATING = ("The function is being created.", "Creating")
_LOG_FORMATS = ("Text", "JSON")
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def _runtimes() -> tuple[str, ...]:
    """The Runtime enum of the Lambda service model, as botocore ships it."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("lambda")
    return tuple(model.shape_for("Runtime").enum)


class ControlPlane:
    def __init__(self, service: Any, store: Store | None) -> None:
        self.service = service
        self.registry: FunctionRegistry = service.registry
        self.store = store
        self.entries: dict[str, Entry] = {}
        self._runtimes: tuple[str, ...] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Stored code is shared by content and collected when nothing refers to it: keeping a package and
        # collecting take turns, and code an update is still preparing counts as referred to.
        self._code_lock = asyncio.Lock()
        self._updating: dict[str, FunctionSpec] = {}
        settings = service.settings
        self.region, self.account_id = settings.region, settings.account_id
        for function in self.registry:
            self.entries[function.name] = Entry(meta=template_meta(self.account_id), source="template")
        self._template = {function.name: function for function in self.registry}  # as the template last said

    # -- lifecycle ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Bring back the functions created through the API (before the service starts)."""
        if self.store is None:
            return
        self.store.open()
        for document in self.store.load():
            entry, latest, versions, aliases = entry_from_document(document)
            if self.registry.get(latest.name) is not None:
                log.warning("catalog.shadowed", function=latest.name, detail="the template defines it too")
                continue
            entry.updating = False
            if entry.meta.state == "Pending":
                entry.meta.state = "Active"
            self.registry.add(latest)
            for version in versions:
                self.registry.publish(version)
            self.registry.aliases(latest.name).update({alias.name: alias for alias in aliases})
            self.entries[latest.name] = entry

    async def apply_template(self, functions: list[FunctionSpec]) -> dict[str, list[str]]:
        """The template was edited: serve its functions as they are now. Removed ones stop (running invocations
        finish), added ones start, changed ones are redeployed (a new pool: busy environments finish with the
        old configuration). A function is changed when the template says something else for it than last time
        (an UpdateFunctionCode since is kept until then); functions created through the API are left alone.
        The names per kind of change."""
        new = {spec.name: spec for spec in functions}
        old = self._template
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [n for n in old if n not in new]}
        for name in changes["removed"]:
            entry = self.entries.get(name)
            if entry is None or entry.source != "template":
                continue  # deleted through the API meanwhile (and maybe created again there)
            for removed in self.registry.remove(name):
                self.service.undeploy(removed)
            del self.entries[name]
        for name, spec in new.items():
            if name not in old and name in self.entries:
                log.warning("template.shadowed", function=name, detail="a function created through the API has it")
            elif name not in old:
                changes["added"].append(name)
            elif old[name] != spec:
                changes["changed"].append(name)
        self._template = {name: spec for name, spec in new.items() if name in old or name in changes["added"]}
        await self.service.set_template_functions(list(self._template.values()))
        for name in changes["added"] + changes["changed"]:
            spec = new[name]
            if (reason := await self.service.deploy(spec)) is not None:  # served from here on; then shown
                log.warning("function.unavailable", function=name, reason=reason)
            self.registry.add(spec)
            entry = self.entries.setdefault(name, Entry(meta=template_meta(self.account_id), source="template"))
            entry.meta = template_meta(self.account_id)  # a new revision, its code digest computed anew
        return changes

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _save(self, name: str) -> None:
        entry = self.entries.get(name)
        latest = self.registry.get(name)
        if self.store is None or entry is None or entry.source != "api" or latest is None:
            return
        document = entry_document(entry, latest, self.registry.versions(name), self.registry.aliases(name))
        try:
            self.store.save(name, document)
        except OSError as exc:
            raise _storage_error(exc) from None

    def _save_in_background(self, name: str) -> None:
        """`_save` from work nobody waits for: a failure goes to the log (the function is served meanwhile,
        from memory; its stored state is the last one saved)."""
        try:
            self._save(name)
        except LambdaServiceError as exc:
            log.error("function.save_failed", function=name, detail=exc.message)

    async def _collect_garbage(self) -> None:
        """Remove stored code no function version refers to any more. What refers to code is read here, on
        the loop, while no package is being kept (a package kept meanwhile may be content already
        stored, which this collection must not remove under the function about to use it)."""
        if self.store is None:
            return
        async with self._code_lock:
            referenced = set()
            for name, entry in self.entries.items():
                if entry.source != "api":
                    continue
                specs = [self.registry.get(name), *self.registry.versions(name), self._updating.get(name)]
                for spec in specs:
                    if spec is not None and spec.code_dir is not None and spec.code_dir.parent == self.store.code:
                        referenced.add(spec.code_dir.name)
            await asyncio.to_thread(self.store.collect_garbage, referenced)

    # -- lookups ------------------------------------------------------------------------------------

    def _function(self, raw_name: str, qualifier: str | None = None) -> tuple[FunctionSpec, Entry, str | None]:
        """The $LATEST spec, its entry and the qualifier a request names, or ResourceNotFoundException."""
        ref = parse_function_name(raw_name, qualifier)
        spec = self.registry.get(ref.name) if _NAME_RE.fullmatch(ref.name) else None
        if ref.region not in (None, self.region) or ref.account_id not in (None, self.account_id):
            spec = None
        if spec is None or spec.name not in self.entries:
            arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{ref.name}"
            raise ResourceNotFoundException(f"Function not found: {arn}")
        return spec, self.entries[spec.name], ref.qualifier

    def _version(self, spec: FunctionSpec, entry: Entry, qualifier: str | None) -> tuple[FunctionSpec, Meta]:
        """The version a qualifier names ($LATEST, a number or an alias)."""
        if qualifier in (None, LATEST):
            return spec, entry.meta
        alias = self.registry.aliases(spec.name).get(qualifier)  # type: ignore[arg-type]
        version = alias.function_version if alias is not None else qualifier
        published = self.registry.version(spec.name, version)  # type: ignore[arg-type]
        if published is None or (version == LATEST and alias is None):
            raise ResourceNotFoundException(f"Function not found: {spec.qualified_arn(str(qualifier))}")
        return published, entry.meta if version == LATEST else entry.versions[version]

    def _meta_digest(self, spec: FunctionSpec, meta: Meta) -> Meta:
        if not meta.code_sha256 and spec.code_dir is not None:
            meta.code_sha256, meta.code_size = code.folder_digest(spec.code_dir)
        return meta

    # -- FunctionConfiguration ----------------------------------------------------------------------

    def configuration(self, spec: FunctionSpec, meta: Meta, *, listing: bool = False, qualified: bool = False) -> dict:
        meta = self._meta_digest(spec, meta)
        config: dict[str, Any] = {
            "FunctionName": spec.name,
            "FunctionArn": spec.qualified_arn(spec.version) if qualified or spec.version != LATEST else spec.arn,
            "Role": meta.role,
            "CodeSize": meta.code_size,
            "Description": spec.description,
            "Timeout": spec.timeout,
            "MemorySize": spec.memory_size,
            "LastModified": meta.last_modified,
            "CodeSha256": meta.code_sha256,
            "Version": spec.version,
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": meta.revision_id,
            "PackageType": spec.package_type,
            "Architectures": list(spec.architectures),
            "EphemeralStorage": {"Size": spec.ephemeral_storage},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": {
                "LogFormat": spec.log_format,
                "LogGroup": f"/aws/lambda/{spec.name}",
                **({"ApplicationLogLevel": spec.application_log_level} if spec.application_log_level else {}),
                **({"SystemLogLevel": "INFO"} if spec.log_format == "JSON" else {}),
            },
        }
        if spec.package_type == "Zip":
            config["Runtime"] = spec.runtime
            config["Handler"] = spec.handler
        if spec.environment:
            config["Environment"] = {"Variables": dict(spec.environment)}
        if spec.package_type == "Image":
            image_config = {
                key: value
                for key, value in (
                    ("EntryPoint", list(spec.image_config.entry_point or [])),
                    ("Command", list(spec.image_config.command or [])),
                    ("WorkingDirectory", spec.image_config.working_directory),
                )
                if value
            }
            if image_config:
                config["ImageConfigResponse"] = {"ImageConfig": image_config}
        if listing:
            return config
        config["State"] = meta.state
        for key, value in (
            ("StateReason", meta.state_reason),
            ("StateReasonCode", meta.state_reason_code),
            ("LastUpdateStatus", meta.last_update_status),
            ("LastUpdateStatusReason", meta.last_update_reason),
            ("LastUpdateStatusReasonCode", meta.last_update_reason_code),
        ):
            if value is not None:
                config[key] = value
        if spec.package_type == "Zip":
            config["RuntimeVersionConfig"] = {
                "RuntimeVersionArn": f"arn:aws:lambda:{self.region}::runtime:{_runtime_hash(spec.runtime)}"
            }
        return config

    # -- create, read, delete ------------------------------------------------------------------------

    async def create_function(self, body: dict[str, Any], base_url: str) -> tuple[int, dict]:
        name = _required(body, "FunctionName", str)
        ref = parse_function_name(name)
        if not _NAME_RE.fullmatch(ref.name):
            raise ValidationException(
                f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+"
            )
        name = ref.name
        role = _role(body)
        package_type = _choice(body.get("PackageType", "Zip"), "packageType", ("Zip", "Image"))
        code_body = _required(body, "Code", dict)
        tags = _tags(body.get("Tags", {}))  # every member checked before the code is stored
        if name in self.entries:
            raise ResourceConflictException(f"Function already exist: {name}")
        spec = self._configured(
            FunctionSpec(
                name=name,
                handler=None,
                runtime="",
                code_dir=None,
                package_type=package_type,
                region=self.region,
                account_id=self.account_id,
            ),
            body,
            creating=True,
        )
        spec, package = await self._with_code(spec, code_body)
        if name in self.entries:  # created meanwhile
            raise ResourceConflictException(f"Function already exist: {name}")
        meta = Meta(
            role=role,
            code_sha256=package.sha256 if package else _image_digest(spec),
            code_size=package.size if package else 0,
            state="Pending",
            state_reason=_CREATING[0],
            state_reason_code=_CREATING[1],
            last_update_status=None,
            package=package.hex_digest if package else None,
        )
        entry = Entry(meta=meta, tags=tags)
        self.entries[name] = entry
        self.registry.add(spec)
        self.service.pending[spec.key] = "Pending"
        try:
            self._save(name)
        except LambdaServiceError:  # not stored: not created
            del self.entries[name]
            self.registry.remove(name)
            self.service.pending.pop(spec.key, None)
            raise
        response = self.configuration(spec, meta)
        self._background(self._activate(spec, publish=bool(body.get("Publish"))))
        return 201, response

    async def _activate(self, spec: FunctionSpec, *, publish: bool) -> None:
        """Prepare a new function (stage its code, resolve its runtime), then mark it Active or Failed."""
        reason = await self.service.deploy(spec)
        entry = self.entries.get(spec.name)
        if entry is None or self.registry.get(spec.name) is not spec:
            self.service.pending.pop(spec.key, None)
            return  # deleted or replaced meanwhile
        if publish and reason is None:  # before Active: whoever sees Active sees version 1 too
            await self._publish(spec, entry, description="")
        meta = entry.meta
        if reason is None:
            meta.state, meta.state_reason, meta.state_reason_code = "Active", None, None
            meta.last_update_status = "Successful"
        else:
            meta.state, meta.state_reason, meta.state_reason_code = "Failed", reason, "InvalidRuntime"
            meta.last_update_status = "Failed"
        self.service.pending.pop(spec.key, None)
        self._save_in_background(spec.name)

    def get_function(self, raw_name: str, qualifier: str | None, base_url: str) -> dict:
        spec, entry, qualifier = self._function(raw_name, qualifier)
        version, meta = self._version(spec, entry, qualifier)
        result: dict[str, Any] = {"Configuration": self.configuration(version, meta)}
        if version.package_type == "Image":
            result["Code"] = {
                "RepositoryType": "ECR",
                "ImageUri": version.image_uri,
                "ResolvedImageUri": version.image_uri,
            }
        else:
            location = f"{base_url}/2015-03-31/functions/{spec.name}/package?Qualifier={version.version}"
            result["Code"] = {"RepositoryType": "S3", "Location": location}
        if entry.tags:
            result["Tags"] = dict(entry.tags)
        if spec.reserved_concurrency is not None:
            result["Concurrency"] = {"ReservedConcurrentExecutions": spec.reserved_concurrency}
        return result

    def get_configuration(self, raw_name: str, qualifier: str | None) -> dict:
        spec, entry, qualifier = self._function(raw_name, qualifier)
        version, meta = self._version(spec, entry, qualifier)
        return self.configuration(version, meta)

    def package(self, raw_name: str, qualifier: str | None) -> bytes:
        """The deployment package GetFunction's Code.Location points at: the stored .zip, or a .zip made
        from a template function's folder."""
        spec, entry, qualifier = self._function(raw_name, qualifier)
        version, meta = self._version(spec, entry, qualifier)
        if meta.package and self.store is not None:
            return self.store.package_path(meta.package).read_bytes()
        if version.code_dir is None:
            raise ResourceNotFoundException(f"Function {spec.name} has no deployment package")
        return _zip_folder(version.code_dir)

    def list_functions(self, params: Mapping[str, str]) -> dict:
        all_versions = params.get("FunctionVersion")
        if all_versions is not None and all_versions != "ALL":
            raise ValidationException(
                f"1 validation error detected: Value '{all_versions}' at 'functionVersion' failed to satisfy "
                "constraint: Member must satisfy enum value set: [ALL]"
            )
        items: list[tuple[str, dict]] = []
        for name in sorted(self.entries):
            spec = self.registry.get(name)
            if spec is None:
                continue
            entry = self.entries[name]
            items.append(
                (f"{name}\0", self.configuration(spec, entry.meta, listing=True, qualified=bool(all_versions)))
            )
            if all_versions:
                for version in self.registry.versions(name):
                    key = f"{name}\0{int(version.version):010d}"
                    items.append((key, self.configuration(version, entry.versions[version.version], listing=True)))
        page, marker = _page(items, params)
        return {"Functions": page, **({"NextMarker": marker} if marker else {})}

    async def delete_function(self, raw_name: str, qualifier: str | None) -> None:
        spec, entry, qualifier = self._function(raw_name, qualifier)
        if qualifier not in (None, LATEST) and not qualifier.isdigit():  # type: ignore[union-attr]
            raise InvalidParameterValueException("Deletion of aliases is not supported")
        if qualifier == LATEST:
            raise InvalidParameterValueException("$LATEST version cannot be deleted without deleting the function.")
        if qualifier is not None:
            version = self.registry.version(spec.name, qualifier)
            if version is None:
                raise ResourceNotFoundException(f"Function not found: {spec.qualified_arn(qualifier)}")
            using = [a.name for a in self.registry.aliases(spec.name).values() if _alias_uses(a, qualifier)]
            if using:
                raise ResourceConflictException(
                    f"Unable to delete version because the following aliases reference it: {using}"
                )
            self.registry.unpublish(spec.name, qualifier)
            entry.versions.pop(qualifier, None)
            self.service.undeploy(version)
            self._save(spec.name)
        else:
            for removed in self.registry.remove(spec.name):
                self.service.undeploy(removed)
                self.service.pending.pop(removed.key, None)
            del self.entries[spec.name]
            if entry.source == "api" and self.store is not None:
                self.store.delete(spec.name)
        await self._collect_garbage()

    # -- updates ------------------------------------------------------------------------------------

    def _begin_update(self, spec: FunctionSpec, entry: Entry, body: Mapping[str, Any]) -> None:
        if entry.updating or entry.meta.state == "Pending":
            raise ResourceConflictException(
                f"The operation cannot be performed at this time. An update is in progress for resource: {spec.arn}"
            )
        revision = body.get("RevisionId")
        if revision is not None and revision != entry.meta.revision_id:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    async def update_code(self, raw_name: str, body: dict[str, Any]) -> dict:
        spec, entry, _ = self._function(raw_name)
        self._begin_update(spec, entry, body)
        code_body = {
            k: v for k, v in body.items() if k in ("ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri")
        }
        if not code_body:
            raise InvalidParameterValueException("Please provide a source for function code.")
        if spec.package_type == "Image" and "ImageUri" not in code_body:
            raise InvalidParameterValueException(
                "Please provide ImageUri when updating a function with packageType Image."
            )
        if spec.package_type == "Zip" and "ImageUri" in code_body:
            raise InvalidParameterValueException(
                "Please don't provide ImageUri when updating a function with packageType Zip."
            )
        updated, package = await self._with_code(spec, code_body)
        if body.get("DryRun"):
            return self.configuration(spec, entry.meta)
        meta = entry.meta.touched(
            code_sha256=package.sha256 if package else _image_digest(updated),
            code_size=package.size if package else 0,
            package=package.hex_digest if package else None,
        )
        return self._start_update(updated, entry, meta, publish=bool(body.get("Publish")))

    async def update_configuration(self, raw_name: str, body: dict[str, Any]) -> dict:
        spec, entry, _ = self._function(raw_name)
        self._begin_update(spec, entry, body)
        updated = self._configured(spec, body, creating=False)
        meta = entry.meta.touched(role=_role(body) if "Role" in body else entry.meta.role)
        return self._start_update(updated, entry, meta, publish=False)

    def _start_update(self, updated: FunctionSpec, entry: Entry, meta: Meta, *, publish: bool) -> dict:
        meta.last_update_status = "InProgress"
        meta.last_update_reason, meta.last_update_reason_code = _CREATING
        entry.meta = meta
        entry.updating = True
        self._updating[updated.name] = updated
        response = self.configuration(updated, meta)
        self._background(self._finish_update(updated, entry, publish=publish))
        return response

    async def _finish_update(self, updated: FunctionSpec, entry: Entry, *, publish: bool) -> None:
        """Prepare the new configuration; invocations run the previous one until it is ready, as on Lambda.
        The update is over (another may start) at the moment LastUpdateStatus leaves InProgress: a waiter
        that sees Successful may send the next update at once."""
        try:
            reason = await self.service.deploy(updated)
            if self.entries.get(updated.name) is not entry:
                return  # deleted meanwhile
            self.registry.add(updated)
            if publish and reason is None:
                await self._publish(updated, entry, description="")
            meta = entry.meta
            meta.last_update_reason = None if reason is None else reason
            meta.last_update_reason_code = None if reason is None else "InvalidRuntime"
            meta.last_update_status = "Successful" if reason is None else "Failed"
            entry.updating = False
            self._save_in_background(updated.name)
        finally:
            entry.updating = False
            if self._updating.get(updated.name) is updated:
                del self._updating[updated.name]
        await self._collect_garbage()

    def _configured(self, spec: FunctionSpec, body: Mapping[str, Any], *, creating: bool) -> FunctionSpec:
        """`spec` with the configuration members of a Create/UpdateFunctionConfiguration body applied."""
        changes: dict[str, Any] = {}
        if "Runtime" in body or (creating and spec.package_type == "Zip"):
            runtime = _required(body, "Runtime", str)
            self._runtimes = self._runtimes or _runtimes()
            if runtime not in self._runtimes:
                raise InvalidParameterValueException(
                    f"Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: "
                    f"[{', '.join(self._runtimes)}] or be a valid ARN"
                )
            changes["runtime"] = runtime
        if "Handler" in body:
            handler = body["Handler"]
            if not isinstance(handler, str) or not 0 < len(handler) <= 128:
                raise InvalidParameterValueException("Handler must be a string of 1 to 128 characters")
            changes["handler"] = handler
        runtime = changes.get("runtime", spec.runtime)
        handler = changes.get("handler", spec.handler)
        if spec.package_type == "Zip" and not handler and not runtime.startswith("provided"):
            raise InvalidParameterValueException("Handler is required for Zip functions with the runtime " + runtime)
        if "Description" in body:
            changes["description"] = _typed(body["Description"], "Description", str)
        if "Timeout" in body:
            changes["timeout"] = _bounded(body["Timeout"], "timeout", 1, 900)
        if "MemorySize" in body:
            changes["memory_size"] = _bounded(body["MemorySize"], "memorySize", 128, 10240)
        if "EphemeralStorage" in body:
            storage = _typed(body["EphemeralStorage"], "EphemeralStorage", dict)
            changes["ephemeral_storage"] = _bounded(storage.get("Size"), "ephemeralStorage.size", 512, 10240)
        if "Environment" in body:
            environment = _typed(body["Environment"] or {}, "Environment", dict)
            variables = _typed(environment.get("Variables") or {}, "Environment.Variables", dict)
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
                raise InvalidParameterValueException("Environment variables must be strings")
            if len(json.dumps(variables, separators=(",", ":")).encode()) > _MAX_ENVIRONMENT_BYTES:
                raise InvalidParameterValueException(
                    f"Lambda was unable to configure your environment variables because the environment variables "
                    f"you have provided exceeded the 4KB limit. String measured: {json.dumps(variables)}"
                )
            changes["environment"] = dict(variables)
        if "Architectures" in body:
            architectures = body["Architectures"]
            if (
                not isinstance(architectures, list)
                or len(architectures) != 1
                or architectures[0] not in ("x86_64", "arm64")
            ):
                raise InvalidParameterValueException("Architectures must be a list of exactly one of x86_64, arm64")
            changes["architectures"] = (architectures[0],)
        if "LoggingConfig" in body:
            logging_config = _typed(body["LoggingConfig"], "LoggingConfig", dict)
            if "LogFormat" in logging_config:
                changes["log_format"] = _choice(logging_config["LogFormat"], "loggingConfig.logFormat", _LOG_FORMATS)
            if "ApplicationLogLevel" in logging_config:
                changes["application_log_level"] = _choice(
                    logging_config["ApplicationLogLevel"], "loggingConfig.applicationLogLevel", _LOG_LEVELS
                )
        if "ImageConfig" in body:
            if spec.package_type != "Image":
                raise InvalidParameterValueException(
                    "ImageConfig is only supported for functions with packageType Image"
                )
            image = _typed(body["ImageConfig"] or {}, "ImageConfig", dict)
            working_directory = image.get("WorkingDirectory")
            if working_directory is not None and (
                not isinstance(working_directory, str) or len(working_directory) > _MAX_WORKING_DIRECTORY_CHARS
            ):
                raise InvalidParameterValueException(
                    f"ImageConfig.WorkingDirectory must be a string of up to {_MAX_WORKING_DIRECTORY_CHARS} characters"
                )
            changes["image_config"] = ImageConfig(
                entry_point=_strings(image.get("EntryPoint"), "ImageConfig.EntryPoint", _MAX_IMAGE_ARGUMENTS) or None,
                command=_strings(image.get("Command"), "ImageConfig.Command", _MAX_IMAGE_ARGUMENTS) or None,
                working_directory=working_directory,
            )
        return dataclasses.replace(spec, **changes)

    async def _with_code(self, spec: FunctionSpec, body: Mapping[str, Any]) -> tuple[FunctionSpec, code.Package | None]:
        """`spec` pointing at the code a Code member (or UpdateFunctionCode body) gives, stored."""
        if spec.package_type == "Image":
            image = body.get("ImageUri")
            if not isinstance(image, str) or not image:
                raise InvalidParameterValueException("Code.ImageUri is required for functions with packageType Image")
            return dataclasses.replace(spec, image_uri=image, code_dir=None), None
        if "ImageUri" in body:
            raise InvalidParameterValueException("Code.ImageUri is only supported for functions with packageType Image")
        if "ZipFile" in body:
            data = _zip_bytes(body["ZipFile"])
        elif "S3Bucket" in body or "S3Key" in body:
            data = await asyncio.to_thread(self._from_s3, body)
        else:
            raise InvalidParameterValueException("Please provide a source for function code.")
        package = code.check(data)
        if self.store is None:
            raise InvalidParameterValueException("Functions cannot be created here: SANDBOX_DATA_DIR is not set")
        try:
            async with self._code_lock:  # not while a collection runs (`_collect_garbage`)
                folder = await asyncio.to_thread(self.store.keep_package, package)
        except OSError as exc:
            raise _storage_error(exc) from None
        return dataclasses.replace(spec, code_dir=folder), package

    def _from_s3(self, body: Mapping[str, Any]) -> bytes:
        bucket, key = body.get("S3Bucket"), body.get("S3Key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise InvalidParameterValueException("S3Bucket and S3Key must both be given")
        endpoint = self.service.settings.s3_endpoint
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client("s3", endpoint_url=endpoint or None, region_name=self.region)
        try:
            extra = {"VersionId": body["S3ObjectVersion"]} if body.get("S3ObjectVersion") else {}
            result = client.get_object(Bucket=bucket, Key=key, **extra)
            data: bytes = result["Body"].read(code.MAX_ZIPPED_BYTES + 1)
        except (ClientError, BotoCoreError) as exc:
            raise InvalidParameterValueException(
                f"Error occurred while GetObject. S3 Error Code: {_s3_code(exc)}. S3 Error Message: {exc}"
            ) from None
        return data

    # -- versions -----------------------------------------------------------------------------------

    async def publish_version(self, raw_name: str, body: dict[str, Any]) -> dict:
        spec, entry, _ = self._function(raw_name)
        if entry.updating or entry.meta.state == "Pending":
            raise ResourceConflictException(
                f"The operation cannot be performed at this time. An update is in progress for resource: {spec.arn}"
            )
        if body.get("RevisionId") not in (None, entry.meta.revision_id):
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )
        sha = body.get("CodeSha256")
        if sha is not None and sha != self._meta_digest(spec, entry.meta).code_sha256:
            raise InvalidParameterValueException(
                f"CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST "
                f"({entry.meta.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
            )
        version, meta = await self._publish(spec, entry, description=body.get("Description"))
        self._save(spec.name)
        return self.configuration(version, meta)

    async def _publish(self, spec: FunctionSpec, entry: Entry, *, description: str | None) -> tuple[FunctionSpec, Meta]:
        latest_meta = self._meta_digest(spec, entry.meta)
        published = self.registry.versions(spec.name)
        last = published[-1] if published else None
        if last is not None and entry.versions[last.version].source_revision == latest_meta.revision_id:
            return last, entry.versions[last.version]  # $LATEST unchanged since: Lambda returns that version
        entry.last_version += 1
        number = str(entry.last_version)
        version = dataclasses.replace(
            spec, version=number, description=spec.description if description is None else description
        )
        self.registry.publish(version)
        entry.versions[number] = dataclasses.replace(
            latest_meta,
            last_modified=now_timestamp(),
            revision_id=new_revision(),
            state="Active",
            last_update_status="Successful",
            source_revision=latest_meta.revision_id,
        )
        await self.service.deploy(version)
        return version, entry.versions[number]

    def list_versions(self, raw_name: str, params: Mapping[str, str]) -> dict:
        spec, entry, _ = self._function(raw_name)
        items = [(f"{0:010d}", self.configuration(spec, entry.meta, listing=True, qualified=True))]
        for version in self.registry.versions(spec.name):
            items.append(
                (
                    f"{int(version.version):010d}",
                    self.configuration(version, entry.versions[version.version], listing=True),
                )
            )
        page, marker = _page(items, params)
        return {"Versions": page, **({"NextMarker": marker} if marker else {})}

    # -- aliases ------------------------------------------------------------------------------------

    def _alias_document(self, spec: FunctionSpec, alias: Alias) -> dict:
        document: dict[str, Any] = {
            "AliasArn": spec.qualified_arn(alias.name),
            "Name": alias.name,
            "FunctionVersion": alias.function_version,
            "Description": alias.description,
            "RevisionId": alias.revision_id,
        }
        if alias.weights:
            document["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.weights)}
        return document

    def _routing(self, spec: FunctionSpec, primary: str, body: Mapping[str, Any]) -> dict[str, float]:
        routing = body.get("RoutingConfig") or {}
        weights = _typed(routing.get("AdditionalVersionWeights") or {}, "AdditionalVersionWeights", dict)
        if len(weights) > 1:
            raise InvalidParameterValueException("Number of items in AdditionalVersionWeights cannot be greater than 1")
        result = {}
        for version, weight in weights.items():
            if not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
                raise ValidationException(
                    "1 validation error detected: Value at 'routingConfig.additionalVersionWeights' failed to satisfy "
                    "constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
                    "Member must have value greater than or equal to 0.0]"
                )
            if version == primary:
                raise InvalidParameterValueException(
                    f"Invalid function version {version}. Function version {version} is already included in routing "
                    "configuration."
                )
            if self.registry.version(spec.name, version) is None or version == LATEST:
                raise InvalidParameterValueException(f"Function version {version} does not exist or is $LATEST")
            result[version] = float(weight)
        return result

    def create_alias(self, raw_name: str, body: dict[str, Any]) -> dict:
        spec, _, _ = self._function(raw_name)
        name = _required(body, "Name", str)
        if not re.fullmatch(_ALIAS_PATTERN, name) or len(name) > 128:
            raise ValidationException(
                f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must "
                f"satisfy regular expression pattern: {_ALIAS_PATTERN}"
            )
        version = _required(body, "FunctionVersion", str)
        if self.registry.version(spec.name, version) is None:
            raise ResourceNotFoundException(f"Function not found: {spec.qualified_arn(version)}")
        aliases = self.registry.aliases(spec.name)
        if name in aliases:
            raise ResourceConflictException(f"Alias already exists: {spec.qualified_arn(name)}")
        alias = Alias(
            name=name,
            function_version=version,
            description=_typed(body.get("Description", ""), "Description", str),
            weights=self._routing(spec, version, body),
            revision_id=new_revision(),
        )
        aliases[name] = alias
        self._save(spec.name)
        return self._alias_document(spec, alias)

    def _alias(self, raw_name: str, alias_name: str) -> tuple[FunctionSpec, Alias]:
        spec, _, _ = self._function(raw_name)
        alias = self.registry.aliases(spec.name).get(alias_name)
        if alias is None:
            raise ResourceNotFoundException(f"Cannot find alias arn: {spec.qualified_arn(alias_name)}")
        return spec, alias

    def get_alias(self, raw_name: str, alias_name: str) -> dict:
        spec, alias = self._alias(raw_name, alias_name)
        return self._alias_document(spec, alias)

    def update_alias(self, raw_name: str, alias_name: str, body: dict[str, Any]) -> dict:
        spec, alias = self._alias(raw_name, alias_name)
        if body.get("RevisionId") not in (None, alias.revision_id):
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )
        version = body.get("FunctionVersion", alias.function_version)
        if self.registry.version(spec.name, version) is None:
            raise ResourceNotFoundException(f"Function not found: {spec.qualified_arn(version)}")
        weights = self._routing(spec, version, body) if "RoutingConfig" in body else dict(alias.weights)
        updated = dataclasses.replace(
            alias,
            function_version=version,
            description=body.get("Description", alias.description),
            weights=weights,
            revision_id=new_revision(),
        )
        self.registry.aliases(spec.name)[alias.name] = updated
        self._save(spec.name)
        return self._alias_document(spec, updated)

    def delete_alias(self, raw_name: str, alias_name: str) -> None:
        spec, _, _ = self._function(raw_name)
        self.registry.aliases(spec.name).pop(alias_name, None)
        self._save(spec.name)

    def list_aliases(self, raw_name: str, params: Mapping[str, str]) -> dict:
        spec, _, _ = self._function(raw_name)
        version = params.get("FunctionVersion")
        items = [
            (alias.name, self._alias_document(spec, alias))
            for alias in sorted(self.registry.aliases(spec.name).values(), key=lambda a: a.name)
            if version is None or alias.function_version == version
        ]
        page, marker = _page(items, params)
        return {"Aliases": page, **({"NextMarker": marker} if marker else {})}

    # -- concurrency, account, code signing, tags ---------------------------------------------------

    def reserved_total(self, excluding: str | None = None) -> int:
        return sum(
            spec.reserved_concurrency or 0
            for spec in self.registry
            if spec.name != excluding and spec.name in self.entries
        )

    def put_concurrency(self, raw_name: str, body: dict[str, Any]) -> dict:
        spec, _, qualifier = self._function(raw_name)
        if qualifier is not None:
            raise InvalidParameterValueException(
                "This operation is permitted on Lambda functions only. Aliases and versions do not support this "
                "operation. Please specify either a function name or an unqualified function ARN."
            )
        reserved = _bounded(body.get("ReservedConcurrentExecutions"), "reservedConcurrentExecutions", 0, None)
        if ACCOUNT_CONCURRENCY - self.reserved_total(excluding=spec.name) - reserved < _MIN_UNRESERVED:
            raise InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{_MIN_UNRESERVED}]."
            )
        self._set_reserved(spec, reserved)
        return {"ReservedConcurrentExecutions": reserved}

    def get_concurrency(self, raw_name: str) -> dict:
        spec, _, _ = self._function(raw_name)
        return {} if spec.reserved_concurrency is None else {"ReservedConcurrentExecutions": spec.reserved_concurrency}

    def delete_concurrency(self, raw_name: str) -> None:
        spec, _, _ = self._function(raw_name)
        self._set_reserved(spec, None)

    def _set_reserved(self, spec: FunctionSpec, reserved: int | None) -> None:
        """Reserved concurrency belongs to the function, every version included; applied in place."""
        for version in [spec, *self.registry.versions(spec.name)]:
            changed = dataclasses.replace(version, reserved_concurrency=reserved)
            if version.version == LATEST:
                self.registry.add(changed)
            else:
                self.registry.publish(changed)
            self.service.set_reserved(changed)
        self._save(spec.name)

    def account_settings(self) -> dict:
        total = 0
        for name, entry in self.entries.items():
            spec = self.registry.get(name)
            if spec is not None and entry.source == "api":
                total += entry.meta.code_size + sum(meta.code_size for meta in entry.versions.values())
        return {
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800,
                "CodeSizeUnzipped": code.MAX_UNZIPPED_BYTES,
                "CodeSizeZipped": code.MAX_ZIPPED_BYTES,
                "ConcurrentExecutions": ACCOUNT_CONCURRENCY,
                "UnreservedConcurrentExecutions": ACCOUNT_CONCURRENCY - self.reserved_total(),
            },
            "AccountUsage": {"TotalCodeSize": total, "FunctionCount": len(self.entries)},
        }

    def code_signing_config(self, raw_name: str) -> dict:
        spec, _, _ = self._function(raw_name)
        return {"CodeSigningConfigArn": "", "FunctionName": spec.name}

    def _tagged(self, arn: str) -> tuple[FunctionSpec, Entry]:
        spec, entry, qualifier = self._function(arn)
        if qualifier is not None:
            raise InvalidParameterValueException("Tags are only supported on functions, not on versions or aliases")
        return spec, entry

    def tag(self, arn: str, body: dict[str, Any]) -> None:
        spec, entry = self._tagged(arn)
        entry.tags.update(_tags(_required(body, "Tags", dict)))
        self._save(spec.name)

    def untag(self, arn: str, keys: list[str]) -> None:
        spec, entry = self._tagged(arn)
        for key in keys:
            entry.tags.pop(key, None)
        self._save(spec.name)

    def list_tags(self, arn: str) -> dict:
        _, entry = self._tagged(arn)
        return {"Tags": dict(entry.tags)}

    # -- asynchronous invocation configuration ------------------------------------------------------

    def event_invoke_config(self, function: FunctionSpec) -> dict[str, Any] | None:
        """The config that applies to Event invocations of `function` (any version), if set."""
        entry = self.entries.get(function.name)
        return entry.event_invoke_config if entry is not None else None

    def put_event_invoke_config(self, raw_name: str, body: dict[str, Any], *, merge: bool) -> dict:
        spec, entry, _ = self._function(raw_name)
        config = dict(entry.event_invoke_config or {}) if merge else {}
        if "MaximumRetryAttempts" in body:
            config["MaximumRetryAttempts"] = _bounded(body["MaximumRetryAttempts"], "maximumRetryAttempts", 0, 2)
        if "MaximumEventAgeInSeconds" in body:
            config["MaximumEventAgeInSeconds"] = _bounded(
                body["MaximumEventAgeInSeconds"], "maximumEventAgeInSeconds", 60, 21600
            )
        if "DestinationConfig" in body:
            destinations = _typed(body["DestinationConfig"] or {}, "DestinationConfig", dict)
            checked: dict[str, Any] = {}
            for kind in ("OnSuccess", "OnFailure"):
                destination = _typed(destinations.get(kind) or {}, f"DestinationConfig.{kind}", dict)
                target = destination.get("Destination")
                if target:
                    self._destination(_typed(target, f"DestinationConfig.{kind}.Destination", str))
                    checked[kind] = {"Destination": target}
            config["DestinationConfig"] = checked
        config["LastModified"] = _epoch_now()
        entry.event_invoke_config = config
        self._save(spec.name)
        return self._event_invoke_document(spec, config)

    def _destination(self, arn: str) -> FunctionSpec:
        """A destination must be a function here (SQS, SNS, EventBridge are outside this service)."""
        if ":function:" not in arn:
            raise InvalidParameterValueException(
                f"The destination ARN {arn} is invalid: only Lambda functions are supported as destinations here"
            )
        target, _, _ = self._function(arn)
        return target

    def destination(self, arn: str) -> FunctionSpec | None:
        try:
            return self._destination(arn)
        except (InvalidParameterValueException, ResourceNotFoundException):
            return None

    def get_event_invoke_config(self, raw_name: str) -> dict:
        spec, entry, _ = self._function(raw_name)
        if entry.event_invoke_config is None:
            raise ResourceNotFoundException(
                f"The function {spec.qualified_arn(LATEST)} doesn't have an EventInvokeConfig"
            )
        return self._event_invoke_document(spec, entry.event_invoke_config)

    def delete_event_invoke_config(self, raw_name: str) -> None:
        spec, entry, _ = self._function(raw_name)
        if entry.event_invoke_config is None:
            raise ResourceNotFoundException(
                f"The function {spec.qualified_arn(LATEST)} doesn't have an EventInvokeConfig"
            )
        entry.event_invoke_config = None
        self._save(spec.name)

    def list_event_invoke_configs(self, raw_name: str) -> dict:
        spec, entry, _ = self._function(raw_name)
        configs = (
            [] if entry.event_invoke_config is None else [self._event_invoke_document(spec, entry.event_invoke_config)]
        )
        return {"FunctionEventInvokeConfigs": configs}

    def _event_invoke_document(self, spec: FunctionSpec, config: dict[str, Any]) -> dict:
        document = {"FunctionArn": spec.qualified_arn(LATEST), **config}
        document.setdefault("DestinationConfig", {})
        return document


# -- request helpers --------------------------------------------------------------------------------


def _epoch_now() -> float:
    return round(time.time(), 3)


def _runtime_hash(runtime: str) -> str:
    return hashlib.sha256(f"sandbox-runtime:{runtime}".encode()).hexdigest()


def _image_digest(spec: FunctionSpec) -> str:
    return base64.b64encode(hashlib.sha256((spec.image_uri or "").encode()).digest()).decode()


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


def _alias_uses(alias: Alias, version: str) -> bool:
    return alias.function_version == version or version in alias.weights


def _zip_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidParameterValueException("Code.ZipFile must be base64-encoded bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise code.bad_zip() from None


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _required(body: Mapping[str, Any], key: str, kind: type) -> Any:
    if body.get(key) is None:
        member = key[0].lower() + key[1:]
        raise ValidationException(
            f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: "
            "Member must not be null"
        )
    return _typed(body[key], key, kind)


def _typed(value: Any, key: str, kind: type) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidParameterValueException(f"{key} must be a {kind.__name__}")
    return value


def _strings(value: Any, key: str, most: int) -> tuple[str, ...]:
    """A list of at most `most` strings (None: empty), as a tuple."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > most or not all(isinstance(item, str) for item in value):
        raise InvalidParameterValueException(f"{key} must be a list of at most {most} strings")
    return tuple(value)


def _bounded(value: Any, member: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterValueException(f"{member} must be an integer")
    if value < low:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {low}"
        )
    if high is not None and value > high:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
            f"Member must have value less than or equal to {high}"
        )
    return value


def _choice(value: Any, member: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(value)


def _role(body: Mapping[str, Any]) -> str:
    role = _required(body, "Role", str)
    if not re.fullmatch(_ROLE_PATTERN, role):
        raise ValidationException(
            f"1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {_ROLE_PATTERN}"
        )
    return str(role)


def _tags(value: Any) -> dict[str, str]:
    tags = _typed(value, "Tags", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidParameterValueException("Tags must map strings to strings")
    return dict(tags)


def _page(items: list[tuple[str, dict]], params: Mapping[str, str]) -> tuple[list[dict], str | None]:
    """One page of `items` (sorted by key): at most MaxItems (≤ 50), after Marker (an opaque key)."""
    limit = _PAGE
    if "MaxItems" in params:
        try:
            limit = int(params["MaxItems"])
        except ValueError:
            raise ValidationException("MaxItems must be an integer") from None
        if not 1 <= limit <= 10000:
            raise ValidationException(
                f"1 validation error detected: Value '{limit}' at 'maxItems' failed to satisfy constraint: "
                "Member must have value less than or equal to 10000 and greater than or equal to 1"
            )
        limit = min(limit, _PAGE)
    start = 0
    if marker := params.get("Marker"):
        try:
            after = base64.urlsafe_b64decode(marker.encode()).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidParameterValueException("Invalid marker") from None
        start = next((i for i, (key, _) in enumerate(items) if key > after), len(items))
    page = items[start : start + limit]
    more = start + limit < len(items)
    next_marker = base64.urlsafe_b64encode(page[-1][0].encode()).decode() if more and page else None
    return [item for _, item in page], next_marker


# -- HTTP -------------------------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_REQUEST_BYTES:
        raise RequestTooLargeException(
            f"Request must be smaller than {_MAX_REQUEST_BYTES} bytes for the {request.url.path} operation"
        )
    if not raw.strip():
        return {}
    try:
        # orjson, not the stdlib: it refuses what the answers could not carry back (a lone surrogate such as
        # "\ud800", which has no UTF-8 form, NaN) and nesting past 1024 levels.
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestContentException("Could not parse request body into json") from None
    if not isinstance(body, dict):
        raise InvalidRequestContentException("Could not parse request body into json")
    return body


def _json(request: Request, document: Any, status: int = 200) -> Response:
    return JSONResponse(document, status_code=status, headers={"x-amzn-RequestId": request.state.request_id})


def _empty(request: Request, status: int = 204) -> Response:
    return Response(status_code=status, headers={"x-amzn-RequestId": request.state.request_id})


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


Handler = Callable[[Request], Awaitable[Response]]


def routes() -> list[Route]:
    def control(request: Request) -> ControlPlane:
        return request.app.state.control  # type: ignore[no-any-return]

    def name(request: Request) -> str:
        return str(request.path_params["function_name"])

    def qualifier(request: Request) -> str | None:
        return request.query_params.get("Qualifier")

    async def create(request: Request) -> Response:
        status, document = await control(request).create_function(await _body(request), _base_url(request))
        return _json(request, document, status)

    async def list_functions(request: Request) -> Response:
        return _json(request, control(request).list_functions(request.query_params))

    async def get(request: Request) -> Response:
        return _json(request, control(request).get_function(name(request), qualifier(request), _base_url(request)))

    async def delete(request: Request) -> Response:
        await control(request).delete_function(name(request), qualifier(request))
        return _empty(request)

    async def configuration(request: Request) -> Response:
        if request.method == "GET":
            return _json(request, control(request).get_configuration(name(request), qualifier(request)))
        return _json(request, await control(request).update_configuration(name(request), await _body(request)))

    async def update_code(request: Request) -> Response:
        return _json(request, await control(request).update_code(name(request), await _body(request)))

    async def package(request: Request) -> Response:
        data = await asyncio.to_thread(control(request).package, name(request), qualifier(request))
        return Response(data, media_type="application/zip", headers={"x-amzn-RequestId": request.state.request_id})

    async def versions(request: Request) -> Response:
        if request.method == "POST":
            document = await control(request).publish_version(name(request), await _body(request))
            return _json(request, document, 201)
        return _json(request, control(request).list_versions(name(request), request.query_params))

    async def aliases(request: Request) -> Response:
        if request.method == "POST":
            return _json(request, control(request).create_alias(name(request), await _body(request)), 201)
        return _json(request, control(request).list_aliases(name(request), request.query_params))

    async def alias(request: Request) -> Response:
        alias_name = request.path_params["alias"]
        if request.method == "GET":
            return _json(request, control(request).get_alias(name(request), alias_name))
        if request.method == "PUT":
            return _json(request, control(request).update_alias(name(request), alias_name, await _body(request)))
        control(request).delete_alias(name(request), alias_name)
        return _empty(request)

    async def concurrency(request: Request) -> Response:
        if request.method == "PUT":
            return _json(request, control(request).put_concurrency(name(request), await _body(request)))
        if request.method == "GET":
            return _json(request, control(request).get_concurrency(name(request)))
        control(request).delete_concurrency(name(request))
        return _empty(request)

    async def account(request: Request) -> Response:
        return _json(request, control(request).account_settings())

    async def code_signing(request: Request) -> Response:
        return _json(request, control(request).code_signing_config(name(request)))

    async def tags(request: Request) -> Response:
        arn = request.path_params["arn"]
        if request.method == "GET":
            return _json(request, control(request).list_tags(arn))
        if request.method == "POST":
            control(request).tag(arn, await _body(request))
        else:
            control(request).untag(arn, request.query_params.getlist("tagKeys"))
        return _empty(request)

    async def event_invoke(request: Request) -> Response:
        plane = control(request)
        if request.method == "GET":
            return _json(request, plane.get_event_invoke_config(name(request)))
        if request.method == "DELETE":
            plane.delete_event_invoke_config(name(request))
            return _empty(request)
        merge = request.method == "POST"  # Update merges; Put replaces
        return _json(request, plane.put_event_invoke_config(name(request), await _body(request), merge=merge))

    async def event_invoke_list(request: Request) -> Response:
        return _json(request, control(request).list_event_invoke_configs(name(request)))

    fn = "/2015-03-31/functions/{function_name}"
    return [
        Route("/2015-03-31/functions", create, methods=["POST"]),
        Route("/2015-03-31/functions/", list_functions, methods=["GET"]),
        Route("/2015-03-31/functions", list_functions, methods=["GET"]),
        Route(fn, get, methods=["GET"]),
        Route(fn, delete, methods=["DELETE"]),
        Route(f"{fn}/configuration", configuration, methods=["GET", "PUT"]),
        Route(f"{fn}/code", update_code, methods=["PUT"]),
        Route(f"{fn}/package", package, methods=["GET"]),
        Route(f"{fn}/versions", versions, methods=["GET", "POST"]),
        Route(f"{fn}/aliases", aliases, methods=["GET", "POST"]),
        Route(f"{fn}/aliases/{{alias}}", alias, methods=["GET", "PUT", "DELETE"]),
        Route("/2017-10-31/functions/{function_name}/concurrency", concurrency, methods=["PUT", "DELETE"]),
        Route("/2019-09-30/functions/{function_name}/concurrency", concurrency, methods=["GET"]),
        Route("/2016-08-19/account-settings", account, methods=["GET"]),
        Route("/2016-08-19/account-settings/", account, methods=["GET"]),
        Route("/2020-06-30/functions/{function_name}/code-signing-config", code_signing, methods=["GET"]),
        Route("/2017-03-31/tags/{arn:path}", tags, methods=["GET", "POST", "DELETE"]),
        Route(
            "/2019-09-25/functions/{function_name}/event-invoke-config",
            event_invoke,
            methods=["GET", "PUT", "POST", "DELETE"],
        ),
        Route("/2019-09-25/functions/{function_name}/event-invoke-config/list", event_invoke_list, methods=["GET"]),
    ]


def _storage_error(exc: OSError) -> LambdaServiceError:
    """What a failed write under SANDBOX_DATA_DIR means to the caller: a full disk is Lambda's own error for
    running out of code storage; anything else is ours."""
    log.warning("catalog.write_failed", error=str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CodeStorageExceededException(
            "Code storage limit exceeded: no space left on the device of SANDBOX_DATA_DIR."
        )
    return ServiceException(f"Cannot store the function under SANDBOX_DATA_DIR: {exc.strerror or exc}")
