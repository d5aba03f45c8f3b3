"""Target profiles: one TOML file per target in ``targets/``, validated on load.

A profile says *what* to build (backend, default precision, preprocessing, tolerances);
which device runs it is the user's own configuration (``devices.toml``).
Every error names the file and the key that is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgekit.errors import OptionsError, ProfileError
from edgekit.types import PRECISIONS

_PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout keeps profiles in the repo's top-level targets/; a wheel carries them in the package.
BUILTIN_TARGETS_DIR = next(
    (d for d in (_PACKAGE_DIR.parent / "targets", Path(sys.prefix) / "share" / "edgekit" / "targets") if d.is_dir()),
    _PACKAGE_DIR.parent / "targets",
)
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one precision. All given criteria must hold, and outputs must be finite."""

    min_cosine: float
    min_sqnr_db: float
    max_abs_error: float | None = None
    #: |gain - 1| at most this, where gain = <artifact, reference> / <reference, reference> (least-squares scale);
    #: catches a scaled output, which cosine never sees and SQNR lets through down to its floor (1.25x is 12 dB)
    max_gain_error: float | None = None

    def to_dict(self) -> dict[str, float]:
        data = {"min_cosine": self.min_cosine, "min_sqnr_db": self.min_sqnr_db}
        if self.max_abs_error is not None:
            data["max_abs_error"] = self.max_abs_error
        if self.max_gain_error is not None:
            data["max_gain_error"] = self.max_gain_error
        return data


def override_tolerance(base: Tolerance, overrides: list[str] | tuple[str, ...], precision: str) -> Tolerance:
    """``base`` with ``--tolerance [PRECISION:]KEY=VALUE`` values applied (KEY: min_cosine, min_sqnr_db, max_abs_error).
    A PRECISION prefix limits a value to builds of that precision."""
    keys = [f.name for f in dataclasses.fields(Tolerance)]
    changes: dict[str, float] = {}
    for text in overrides:
        scope, _, assignment = text.rpartition(":")
        key, equals, value = assignment.partition("=")
        problem = None
        if not equals or key not in keys:
            problem = f"expected [PRECISION:]KEY=VALUE with KEY one of {', '.join(keys)}"
        elif scope and scope not in PRECISIONS:
            problem = f"'{scope}' is not a precision ({', '.join(PRECISIONS)})"
        else:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isnan(number) or (key == "min_cosine" and not -1 <= number <= 1) or (key == "max_abs_error" and number < 0):
                problem = f"{value!r} is not a valid {key}"
        if problem:
            raise OptionsError(f"--tolerance {text!r}: {problem}", hint="e.g. --tolerance min_sqnr_db=20 or --tolerance int8:min_cosine=0.99")
        if not scope or scope == precision:
            changes[key] = number
    return dataclasses.replace(base, **changes)


#: default share of a model's parameters per-layer fallback may keep in float: with int8 weights a quarter in
#: fp32 makes the artifact at most 1.75x the all-int8 size (0.75 + 0.25 * 4), still under half of fp32
DEFAULT_FALLBACK_BUDGET = 0.25

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    # max_gain_error from the real-model zoo (docs/verification.md, bench/tolerances.py): correct artifacts measured
    # |gain - 1| <= 1e-6 (fp32), 0.0011 (fp16), 0.088 (int8); each band leaves a wide margin over that and is tighter
    # than the scale error the precision's SQNR floor lets through (1%, 5.6%, 25%)
    "fp32": Tolerance(min_cosine=0.9999, min_sqnr_db=40.0, max_gain_error=0.001),
    "fp16": Tolerance(min_cosine=0.999, min_sqnr_db=25.0, max_gain_error=0.02),
    "dynamic": Tolerance(min_cosine=0.98, min_sqnr_db=12.0, max_gain_error=0.15),
    "int8": Tolerance(min_cosine=0.98, min_sqnr_db=12.0, max_gain_error=0.15),
}


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input (used for image calibration folders)."""

    layout: str = "NCHW"
    size: tuple[int, int] | None = None  # (height, width); None: from the model
    scale: float = 1.0 / 255.0  # applied to 0..255 pixels before mean/std
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    color: str = "RGB"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "size": list(self.size) if self.size else None,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "color": self.color,
        }


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    backend: str
    default_precision: str
    precisions: tuple[str, ...]
    static_shapes: bool = True
    aliases: tuple[str, ...] = ()
    note: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    latency_warmup: int = 5
    latency_runs: int = 30
    backend_options: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    fix_inputs: dict[str, Any] = field(default_factory=dict)  # input name -> value frozen before simplification
    checks: dict[str, dict[str, float]] = field(default_factory=dict)  # output name -> {"top1": min, "top5": min}
    source: Path | None = None
    #: [fallback]: precisions built with per-layer precision fallback by default (--fallback auto), and its
    #: budget (fraction of the model's parameters that may stay float; --fallback-budget)
    fallback_precisions: tuple[str, ...] = ()
    fallback_budget: float = DEFAULT_FALLBACK_BUDGET

    def tolerance_for(self, precision: str) -> Tolerance:
        return self.tolerances.get(precision, DEFAULT_TOLERANCES[precision])

    @property
    def options(self) -> Any:
        """The backend's typed options parsed from ``backend_options`` (None when the backend is not registered)."""
        from edgekit.backends import backend_class

        cls = backend_class(self.backend)
        return cls.Options.from_profile(self) if cls is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "default_precision": self.default_precision,
            "precisions": list(self.precisions),
            "static_shapes": self.static_shapes,
            "aliases": list(self.aliases),
            "note": self.note,
            "preprocessing": self.preprocessing.to_dict(),
            "tolerances": {p: self.tolerance_for(p).to_dict() for p in self.precisions},
            "latency": {"warmup": self.latency_warmup, "runs": self.latency_runs},
            "backend_options": dict(self.backend_options),
            "hardware": dict(self.hardware),
            "fix_inputs": dict(self.fix_inputs),
            "checks": {k: dict(v) for k, v in self.checks.items()},
            "fallback": {"precisions": list(self.fallback_precisions), "budget": self.fallback_budget},
            "source": str(self.source) if self.source else None,
        }


# --- validation -------------------------------------------------------------------------------


class _Validator:
    """Reads typed values out of a TOML table and reports the file and dotted key on error."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(
            f"{self.source}: key '{key}': {problem}",
            hint="fix the profile (see README, 'Target profiles'), or run 'edgekit targets show NAME' for a valid example",
        )

    def check_keys(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                suggestion = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(f"{prefix}{key}", f"unknown key{suggestion}; allowed: {', '.join(sorted(allowed))}")

    def get(self, table: dict[str, Any], key: str, kind: type | tuple, prefix: str, default: Any = ..., check: Callable[[Any], str | None] | None = None) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(prefix + key, "is required")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(prefix + key, f"expected {self._kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(prefix + key, f"expected {self._kind_name(kinds)}, got {type(value).__name__} {value!r}")
        if check is not None and (problem := check(value)):
            raise self.fail(prefix + key, problem)
        return value

    @staticmethod
    def _kind_name(kinds: tuple) -> str:
        names = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list", dict: "a table"}
        return " or ".join(names.get(k, k.__name__) for k in kinds)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0; got {v!r}"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0; got {v!r}"


def _numbers(length: int | None = None, positive: bool = False) -> Callable[[Any], str | None]:
    def check(values: Any) -> str | None:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            return f"must be a list of numbers; got {values!r}"
        if length is not None and len(values) != length:
            return f"must have {length} entries; got {len(values)}"
        if positive and not all(x > 0 for x in values):
            return f"entries must be > 0; got {values!r}"
        return None

    return check


TOP_KEYS = {
    "name", "description", "backend", "default_precision", "precisions", "static_shapes", "aliases",
    "note", "preprocessing", "tolerances", "latency", "backend_options", "hardware", "fix_inputs", "checks", "fallback",
}


def parse_profile(data: dict[str, Any], source: Path) -> TargetProfile:
    v = _Validator(source)
    v.check_keys(data, TOP_KEYS, "")
    name = v.get(data, "name", str, "", check=lambda s: None if s.strip() else "must not be empty")
    precisions = tuple(v.get(data, "precisions", list, "", default=["fp32", "fp16", "int8"], check=lambda ps: None if ps and all(p in PRECISIONS for p in ps) else f"entries must be among {', '.join(PRECISIONS)}; got {ps!r}"))
    default_precision = v.get(data, "default_precision", str, "", default="fp32", check=_one_of(precisions))

    pre_table = v.get(data, "preprocessing", dict, "", default={})
    v.check_keys(pre_table, {"layout", "size", "scale", "mean", "std", "color"}, "preprocessing.")
    size = v.get(pre_table, "size", list, "preprocessing.", default=None, check=_numbers(2, positive=True))
    preprocessing = Preprocessing(
        layout=v.get(pre_table, "layout", str, "preprocessing.", default="NCHW", check=_one_of(LAYOUTS)),
        size=tuple(int(s) for s in size) if size else None,
        scale=float(v.get(pre_table, "scale", (int, float), "preprocessing.", default=1.0 / 255.0, check=_positive)),
        mean=tuple(float(x) for x in v.get(pre_table, "mean", list, "preprocessing.", default=[0.0, 0.0, 0.0], check=_numbers())),
        std=tuple(float(x) for x in v.get(pre_table, "std", list, "preprocessing.", default=[1.0, 1.0, 1.0], check=_numbers(positive=True))),
        color=v.get(pre_table, "color", str, "preprocessing.", default="RGB", check=_one_of(("RGB", "BGR", "GRAY"))),
    )
    if len(preprocessing.mean) != len(preprocessing.std):
        raise v.fail("preprocessing.std", f"must have as many entries as preprocessing.mean ({len(preprocessing.mean)})")

    tolerances: dict[str, Tolerance] = {}
    tol_table = v.get(data, "tolerances", dict, "", default={})
    v.check_keys(tol_table, set(PRECISIONS), "tolerances.")
    for precision, table in tol_table.items():
        prefix = f"tolerances.{precision}."
        table = v.get(tol_table, precision, dict, "tolerances.")
        v.check_keys(table, {"min_cosine", "min_sqnr_db", "max_abs_error", "max_gain_error"}, prefix)
        base = DEFAULT_TOLERANCES[precision]
        tolerances[precision] = Tolerance(
            min_cosine=float(v.get(table, "min_cosine", (int, float), prefix, default=base.min_cosine, check=lambda c: None if -1 <= c <= 1 else f"must be within [-1, 1]; got {c}")),
            min_sqnr_db=float(v.get(table, "min_sqnr_db", (int, float), prefix, default=base.min_sqnr_db)),
            max_abs_error=(lambda x: float(x) if x is not None else None)(v.get(table, "max_abs_error", (int, float), prefix, default=None, check=_non_negative)),
            max_gain_error=(lambda x: float(x) if x is not None else None)(v.get(table, "max_gain_error", (int, float), prefix, default=base.max_gain_error, check=_non_negative)),
        )

    latency = v.get(data, "latency", dict, "", default={})
    v.check_keys(latency, {"warmup", "runs"}, "latency.")
    fallback = v.get(data, "fallback", dict, "", default={})
    v.check_keys(fallback, {"precisions", "budget"}, "fallback.")
    profile = TargetProfile(
        name=name,
        description=v.get(data, "description", str, "", default=""),
        backend=v.get(data, "backend", str, ""),
        default_precision=default_precision,
        precisions=precisions,
        static_shapes=v.get(data, "static_shapes", bool, "", default=True),
        aliases=tuple(v.get(data, "aliases", list, "", default=[], check=lambda a: None if all(isinstance(x, str) for x in a) else "must be a list of strings")),
        note=v.get(data, "note", str, "", default=None),
        preprocessing=preprocessing,
        tolerances=tolerances,
        latency_warmup=v.get(latency, "warmup", int, "latency.", default=5, check=_non_negative),
        latency_runs=v.get(latency, "runs", int, "latency.", default=30, check=_positive),
        backend_options=dict(v.get(data, "backend_options", dict, "", default={})),
        hardware=dict(v.get(data, "hardware", dict, "", default={})),
        fix_inputs=_fix_inputs(v, v.get(data, "fix_inputs", dict, "", default={})),
        checks=_checks(v, v.get(data, "checks", dict, "", default={})),
        source=source,
        fallback_precisions=tuple(v.get(fallback, "precisions", list, "fallback.", default=[],
                                        check=lambda ps: None if all(p in PRECISIONS for p in ps) else f"entries must be among {', '.join(PRECISIONS)}; got {ps!r}")),
        fallback_budget=float(v.get(fallback, "budget", (int, float), "fallback.", default=DEFAULT_FALLBACK_BUDGET,
                                    check=lambda b: None if 0 <= b <= 1 else f"must be a fraction in [0, 1]; got {b}")),
    )
    profile.options  # noqa: B018  (parses and checks backend_options now, naming the file and key)
    return profile


def _fix_inputs(v: _Validator, table: dict[str, Any]) -> dict[str, Any]:
    """[fix_inputs]: NAME = number, boolean, (nested) list of numbers, or "@values.npy"."""
    def check(value: Any) -> str | None:
        if isinstance(value, str):
            return None if value.startswith("@") and len(value) > 1 else f"a string value must be @FILE.npy; got {value!r}"
        import numpy as np

        try:
            kind = np.asarray(value).dtype.kind
        except ValueError:  # ragged lists
            kind = "O"
        return None if kind in "biuf" else f"must be a number, a (nested) list of numbers or \"@FILE.npy\"; got {value!r}"

    return {name: v.get(table, name, (int, float, bool, list, str), "fix_inputs.", check=check) for name in table}


def _checks(v: _Validator, table: dict[str, Any]) -> dict[str, dict[str, float]]:
    """[checks.OUTPUT]: top1 = MIN, top5 = MIN (fractions of rows whose top classes must agree with the reference)."""
    from edgekit.metrics import TOPK_METRICS

    parsed = {}
    for output in table:
        prefix = f"checks.{output}."
        minima = v.get(table, output, dict, "checks.")
        v.check_keys(minima, set(TOPK_METRICS), prefix)
        parsed[output] = {metric: float(v.get(minima, metric, (int, float), prefix, check=lambda x: None if 0 <= x <= 1 else f"must be within [0, 1]; got {x}"))
                          for metric in minima}
    return parsed


def load_profile_file(path: Path) -> TargetProfile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: target profile file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read target profile: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}", hint="check the line and column named above") from None
    return parse_profile(data, path)


def search_dirs() -> list[Path]:
    """Where named targets are looked up: $EDGEKIT_TARGETS_PATH entries, ./targets, then the built-ins."""
    dirs = [Path(p) for p in os.environ.get("EDGEKIT_TARGETS_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "targets")
    dirs.append(BUILTIN_TARGETS_DIR)
    seen: list[Path] = []
    for folder in dirs:
        resolved = folder.resolve()
        if resolved.is_dir() and resolved not in seen:
            seen.append(resolved)
    return seen


def available_profiles() -> dict[str, TargetProfile]:
    """Every named profile, earlier search dirs shadowing later ones."""
    found: dict[str, TargetProfile] = {}
    for folder in reversed(search_dirs()):
        for path in sorted(folder.glob("*.toml")):
            profile = load_profile_file(path)
            found[profile.name] = profile
    return dict(sorted(found.items()))


def resolve_target(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """A profile by name, alias, or path to a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return load_profile_file(Path(text))
    profiles = available_profiles()
    if text in profiles:
        return profiles[text]
    for profile in profiles.values():
        if text in profile.aliases:
            return profile
    names = sorted(set(profiles) | {a for p in profiles.values() for a in p.aliases})
    close = difflib.get_close_matches(text, names, n=3)
    suggestion = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ProfileError(
        f"unknown target '{text}'",
        hint=f"{suggestion}known targets: {', '.join(names)}; or pass the path to your own .toml profile",
    )
