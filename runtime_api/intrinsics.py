"""CloudFormation intrinsic functions, evaluated locally for the template loader.

`IntrinsicResolver` evaluates Ref, Fn::Sub, Fn::If, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap,
Fn::Base64 and Conditions against a template's Parameters (with overrides), pseudo parameters and
Mappings. It exists because samtranslator's resolver only handles Ref, Fn::Sub and Fn::GetAtt; we
still use it for the substitution step of Fn::Sub. What only a deployed stack knows (Fn::GetAtt, a
Ref to a resource, Fn::ImportValue, SSM parameters) raises `Unresolvable`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from samtranslator.public.intrinsics import IntrinsicsResolver

__all__ = ["NO_VALUE", "IntrinsicResolver", "InvalidValue", "Unresolvable", "stringify"]

_SUB_REF_RE = re.compile(r"\$\{([^!}][^}]*)\}")
_STACK_ID_SUFFIX = "stack/local/51af3dc0-da77-11e4-872e-1234567db123"  # the one SAM CLI uses
NO_VALUE = object()  # what `Ref: AWS::NoValue` resolves to: the property is dropped


class InvalidValue(Exception):
    """An invalid value or template section; the template loader adds the file and the logical id."""


class Unresolvable(Exception):
    """A value only a deployed stack knows: Fn::GetAtt, a Ref to a resource, Fn::ImportValue, ..."""


class IntrinsicResolver:
    """Evaluates intrinsics against parameters, pseudo parameters, Mappings and Conditions.

    Parameters are looked up only when referenced, so a parameter without a value is an error only
    where a property we read needs it.
    """

    def __init__(self, document: Mapping[str, Any], overrides: Mapping[str, str], region: str, account_id: str) -> None:
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
            except Unresolvable:
                if lenient:
                    return None
                raise
        if isinstance(value, dict):
            items = ((k, self.resolve(v, lenient=lenient)) for k, v in value.items())
            return {k: v for k, v in items if v is not NO_VALUE}
        if isinstance(value, list):
            items_ = (self.resolve(v, lenient=lenient) for v in value)
            return [v for v in items_ if v is not NO_VALUE]
        return value

    def condition(self, name: Any) -> bool:
        if not isinstance(name, str) or name not in self._conditions:
            raise InvalidValue(f"Condition {name!r} is not defined in Conditions")
        if name not in self._decided:
            if name in self._deciding:
                raise InvalidValue(f"Condition {name} depends on itself")
            self._deciding.add(name)
            try:
                self._decided[name] = self._truth(self._conditions[name])
            except Unresolvable as exc:
                raise InvalidValue(f"Condition {name}: {exc}") from None
            finally:
                self._deciding.discard(name)
        return self._decided[name]

    def _truth(self, expr: Any) -> bool:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise InvalidValue(f"invalid condition {expr!r}")
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
        raise InvalidValue(f"invalid condition {expr!r}")

    def _if(self, arg: Any) -> Any:
        if not isinstance(arg, list) or len(arg) != 3:
            raise InvalidValue("Fn::If takes [condition, value if true, value if false]")
        return arg[1] if self.condition(arg[0]) else arg[2]

    def _evaluate(self, fn: str, arg: Any) -> Any:
        if fn == "Ref":
            return self._ref(arg)
        if fn == "Fn::Sub":
            return self._sub(arg)
        if fn == "Fn::Join":
            if not isinstance(arg, list) or len(arg) != 2:
                raise InvalidValue("Fn::Join takes [delimiter, list]")
            delimiter, items = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(delimiter, str) or not isinstance(items, list):
                raise InvalidValue("Fn::Join takes [delimiter, list]")
            return delimiter.join(_scalar_text(item) for item in items)
        if fn == "Fn::Select":
            if not isinstance(arg, list) or len(arg) != 2:
                raise InvalidValue("Fn::Select takes [index, list]")
            index, items = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(items, list) or not str(index).isdigit() or int(index) >= len(items):
                raise InvalidValue(f"Fn::Select index {index!r} is out of range")
            return items[int(index)]
        if fn == "Fn::Split":
            if not isinstance(arg, list) or len(arg) != 2:
                raise InvalidValue("Fn::Split takes [delimiter, string]")
            delimiter, text = self.resolve(arg[0]), self.resolve(arg[1])
            if not isinstance(delimiter, str) or not isinstance(text, str):
                raise InvalidValue("Fn::Split takes [delimiter, string]")
            return text.split(delimiter)
        if fn == "Fn::FindInMap":
            return self._find_in_map(arg)
        if fn == "Fn::Base64":
            return base64.b64encode(_scalar_text(self.resolve(arg)).encode()).decode()
        raise Unresolvable(f"{fn} cannot be resolved locally")

    def _ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if not isinstance(name, str):
            raise InvalidValue(f"Ref takes a name, got {name!r}")
        if name in self._pseudo or name in self._parameters:
            return self._parameter(name)
        if name in self._resources:
            raise Unresolvable(f"Ref to resource {name} cannot be resolved locally")
        raise InvalidValue(f"Ref to {name}, which is neither a parameter nor a resource")

    def _parameter(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        declared = self._parameters[name]
        if not isinstance(declared, dict):
            raise InvalidValue(f"parameter {name} must be a mapping")
        kind = str(declared.get("Type", "String"))
        if kind.startswith("AWS::SSM::Parameter::"):
            raise Unresolvable(f"parameter {name} is an SSM parameter, which cannot be read locally")
        if name in self._overrides:
            value = self._overrides[name]
        elif "Default" in declared:
            value = declared["Default"]
        else:
            raise InvalidValue(f"parameter {name} has no Default and no value in parameter_overrides")
        if isinstance(value, list):
            value = ",".join(_scalar_text(v) for v in value)
        text = _scalar_text(value)
        is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
        allowed = declared.get("AllowedValues")
        if isinstance(allowed, list):
            choices = [_scalar_text(v) for v in allowed]
            for item in text.split(",") if is_list else [text]:
                if item not in choices:
                    raise InvalidValue(f"parameter {name}: {item!r} is not one of {choices}")
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
                raise Unresolvable(f"${{{name}}} cannot be resolved locally")
            else:
                raise InvalidValue(f"Fn::Sub references ${{{name}}}, which is neither a parameter nor a resource")
            if isinstance(value, (dict, list)):
                raise InvalidValue(f"Fn::Sub cannot insert the list or mapping ${{{name}}}")
            values[name] = _scalar_text(value)
        result = IntrinsicsResolver(values).resolve_parameter_refs({"Fn::Sub": text})["Fn::Sub"]
        if leftover := _SUB_REF_RE.search(result):
            raise InvalidValue(f"Fn::Sub cannot substitute {leftover.group(0)}")
        return str(result).replace("${!", "${")

    def _find_in_map(self, arg: Any) -> Any:
        if not isinstance(arg, list) or len(arg) not in (3, 4):
            raise InvalidValue("Fn::FindInMap takes [map, top-level key, second-level key]")
        keys = [_scalar_text(self.resolve(v)) for v in arg[:3]]
        mapping = self._mappings.get(keys[0])
        top = mapping.get(keys[1]) if isinstance(mapping, dict) else None
        if isinstance(top, dict) and keys[2] in top:
            return self.resolve(top[keys[2]])
        if len(arg) == 4 and isinstance(arg[3], dict) and "DefaultValue" in arg[3]:
            return self.resolve(arg[3]["DefaultValue"])
        raise InvalidValue(f"Fn::FindInMap: Mappings has no {'/'.join(keys)}")


def _section(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name) or {}
    if not isinstance(value, dict):
        raise InvalidValue(f"{name} must be a mapping")
    return value


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return isinstance(key, str) and (key == "Ref" or key.startswith("Fn::"))


def _sub_pair(arg: Any) -> tuple[str, dict[str, Any]]:
    if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict)):
        raise InvalidValue("Fn::Sub takes a string or [string, {name: value}]")
    return arg[0], arg[1]


def _scalar_text(value: Any) -> str:
    """A resolved scalar as CloudFormation sees it: a string."""
    if value is NO_VALUE or isinstance(value, (dict, list)):
        raise InvalidValue(f"expected a string, got {value!r}")
    return stringify(value)


def stringify(value: Any) -> str:
    """SAM's `_stringify_value`: booleans lower-case, lists/dicts/None/unresolved empty, others str()."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
