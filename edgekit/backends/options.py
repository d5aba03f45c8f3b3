"""Typed backend options: each backend declares a frozen dataclass whose fields are the keys it accepts.

A profile's ``[backend_options]`` table (and, for fields that say so, keys of ``[hardware]``) is parsed into
it when the profile loads, so a typo or a bad value fails there, naming the file and the key, instead of
halfway through a conversion. Field types drive the checks (``bool``, ``int``, ``float``, ``str``,
``tuple[str, ...]``, ``X | None``); :func:`option` adds choices, bounds, and where the key lives.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from edgekit.errors import ProfileError

T = TypeVar("T", bound="BackendOptions")
_MISSING = object()


def option(default: Any, *, choices: tuple[Any, ...] | None = None, minimum: float | None = None, maximum: float | None = None,
           table: str = "backend_options", key: str | None = None) -> Any:
    """A dataclass field of a backend's options; ``table``/``key`` read it from another profile table."""
    metadata = {"choices": choices, "minimum": minimum, "maximum": maximum, "table": table, "key": key}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class BackendOptions:
    """Base class of a backend's typed options; a backend without options uses it as is (no keys allowed)."""

    #: how the backend is named in messages ("TensorRT"), and the page documenting its options
    label: ClassVar[str] = "this backend's"
    docs: ClassVar[str] = "README.md, 'Target profiles'"

    @classmethod
    def from_profile(cls: type[T], profile: Any) -> T:
        """Parse ``profile.backend_options`` (and the ``[hardware]`` keys fields name); raises ProfileError."""
        where = str(profile.source or profile.name)
        tables = {"backend_options": dict(profile.backend_options), "hardware": dict(profile.hardware)}
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        allowed = sorted(f.name for f in fields if f.metadata.get("table", "backend_options") == "backend_options")
        for key in tables["backend_options"]:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean '{close[0]}'?)" if close else ""
                listed = f"; allowed: {', '.join(allowed)}" if allowed else "; this backend takes no options"
                raise cls.error(where, f"backend_options.{key}", f"unknown {cls.label} option{suggestion}{listed}")
        values = {}
        for f in fields:
            table = f.metadata.get("table", "backend_options")
            key = f.metadata.get("key") or f.name
            raw = tables[table].get(key, _MISSING)
            if raw is not _MISSING:
                values[f.name] = _check(cls, where, f"{table}.{key}", raw, hints[f.name], f.metadata)
        parsed = cls(**values)
        parsed.validate(where, tables)
        return parsed

    def validate(self, where: str, tables: dict[str, dict[str, Any]]) -> None:
        """Checks across fields or against other profile tables; raise ``self.error(...)``."""

    @classmethod
    def error(cls, where: str, key: str, problem: str) -> ProfileError:
        return ProfileError(f"{where}: key '{key}': {problem}", hint=f"see {cls.docs} for the {cls.label} options")


def _check(cls: type[BackendOptions], where: str, key: str, value: Any, hint: Any, meta: Any) -> Any:
    kinds = _kinds(hint)
    fail = lambda problem: cls.error(where, key, f"{problem}; got {value!r}")  # noqa: E731
    if tuple in kinds:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail("must be a list of non-empty strings")
        return tuple(value)
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, tuple(k for k in kinds if k is not type(None))):
        raise fail(_expected(kinds, meta))
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise fail(f"must be one of {', '.join(str(c) for c in choices)}")
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        raise fail(_expected(kinds, meta))
    return float(value) if float in kinds else value


def _kinds(hint: Any) -> tuple[type, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(k for arg in typing.get_args(hint) for k in _kinds(arg))
    if hint is float:
        return (float, int)  # TOML writes 3600 for 3600.0
    origin = typing.get_origin(hint)
    return (origin,) if origin is not None else (hint,)


def _expected(kinds: tuple[type, ...], meta: Any) -> str:
    if bool in kinds:
        return "must be true or false"
    low, high = meta.get("minimum"), meta.get("maximum")
    if int in kinds and float not in kinds:
        return f"must be an integer in [{low if low is not None else '...'}, {high if high is not None else '...'}]"
    if float in kinds:
        return "must be a number" + (f" >= {low}" if low is not None else "") + (f" and <= {high}" if high is not None else "")
    return "must be a string"
