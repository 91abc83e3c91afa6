"""Checks every decoded request (socket frame or REST body) gets before any handler sees it.

msgspec validates types and the bounds a field declares. What no field declares, and what would
otherwise surface as ``internal_error`` from deep inside a handler, is checked here once for all:

- a NUL character in any string (PostgreSQL's text cannot hold one);
- a datetime so near the ends of Python's range that converting it to UTC overflows;
- (at start-up, for every client frame type) an integer field without bounds that PostgreSQL's bigint
  can hold, so a huge number is refused by the decoder, naming its field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import inspect as mi

NUL_REASON = "Must not contain NUL characters."
DATETIME_REASON = "Must be a date between years 0001 and 9999 (in UTC)."
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Naive wall-clock bounds such that no UTC offset (less than a day) can push the value out of range.
_EARLIEST = datetime(1, 1, 2)
_LATEST = datetime(9999, 12, 30)

_Plan = tuple[tuple[str, str], ...]  # (attribute, name on the wire) of fields that may hold text
_plans: dict[type, _Plan] = {}


def find_unstorable(value: Any) -> tuple[str, str] | None:
    """The first value no handler should get, as ``(field path, reason)``, or ``None``."""
    return _walk(value, "")


def _walk(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        return (path or "$", NUL_REASON) if "\x00" in value else None
    if isinstance(value, msgspec.Struct):
        for attr, name in _plan(type(value)):
            found = _walk(getattr(value, attr), f"{path}.{name}" if path else name)
            if found is not None:
                return found
        return None
    if isinstance(value, datetime):
        naive = value.replace(tzinfo=None)
        return None if _EARLIEST <= naive <= _LATEST else (path or "$", DATETIME_REASON)
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found = _walk(key, where) or _walk(item, where)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _plan(cls: type[msgspec.Struct]) -> _Plan:
    """The fields of ``cls`` worth walking: those whose type can hold a string or a datetime."""
    plan = _plans.get(cls)
    if plan is None:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        plan = tuple((f.name, f.encode_name) for f in info.fields if _may_hold_text(f.type, set()))
        _plans[cls] = plan
    return plan


def _may_hold_text(t: mi.Type, seen: set[type]) -> bool:
    if isinstance(t, mi.StrType | mi.DateTimeType | mi.AnyType):
        return True
    if isinstance(t, mi.UnionType):
        return any(_may_hold_text(member, seen) for member in t.types)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _may_hold_text(t.item_type, seen)
    if isinstance(t, mi.TupleType):
        return any(_may_hold_text(item, seen) for item in t.item_types)
    if isinstance(t, mi.DictType):
        return _may_hold_text(t.key_type, seen) or _may_hold_text(t.value_type, seen)
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return True
        seen.add(t.cls)
        return any(_may_hold_text(f.type, seen) for f in t.fields)
    return False  # numbers, booleans, UUIDs, literals, bytes, None


def unbounded_ints(cls: type[msgspec.Struct]) -> list[str]:
    """Paths of integer fields of ``cls`` whose declared bounds let values outside bigint through."""
    found: list[str] = []
    _collect_unbounded(mi.type_info(cls), "", found, set())
    return found


def _collect_unbounded(t: mi.Type, path: str, found: list[str], seen: set[type]) -> None:
    if isinstance(t, mi.IntType):
        low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        high = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
        if low is None or high is None or low < INT64_MIN or high > INT64_MAX:
            found.append(path or "$")
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            _collect_unbounded(member, path, found, seen)
    elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        _collect_unbounded(t.item_type, f"{path}[]", found, seen)
    elif isinstance(t, mi.TupleType):
        for item in t.item_types:
            _collect_unbounded(item, f"{path}[]", found, seen)
    elif isinstance(t, mi.DictType):
        _collect_unbounded(t.key_type, f"{path}{{key}}", found, seen)
        _collect_unbounded(t.value_type, f"{path}{{}}", found, seen)
    elif isinstance(t, mi.StructType) and t.cls not in seen:
        seen.add(t.cls)
        for f in t.fields:
            _collect_unbounded(f.type, f"{path}.{f.encode_name}" if path else f.encode_name, found, seen)
