"""Every exception class provium defines descends from one root, through a family."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import provium
from provium.errors import FAMILIES, ProviumError
from provium.host.errors import VmError

SRC = Path(provium.__file__).parent


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(provium.__path__, "provium."))


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


def test_the_walk_finds_the_known_classes():
    names = {c.__name__ for c in _exception_classes()}
    # One from each corner of the package, so an empty walk cannot pass.
    assert {"FrameError", "ClientError", "AgentFail", "WrongState", "QmpError", "ImageError",
            "PreflightError", "LuaChunkError", "UserError", "EventDecodeError"} <= names


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_class_derives_from_the_root_through_a_family(cls):
    assert issubclass(cls, ProviumError), f"{cls.__module__}.{cls.__qualname__} is not a ProviumError"
    if cls in (ProviumError, VmError) or cls in FAMILIES:
        return
    assert any(issubclass(cls, f) for f in FAMILIES), f"{cls.__qualname__} belongs to no family"


def test_no_classification_by_class_name_or_module():
    pattern = re.compile(r"type\(\w+\)\.__module__|type\(\w+\)\.__name__\s*(==|in\b)|\"(CleanEof|\w+Error)\"\s*(==|in\b)")
    offenders = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert offenders == []


def test_wrapped_errors_keep_their_cause():
    from provium import config as configmod

    with pytest.raises(configmod.ConfigError) as ei:
        configmod.load("/nonexistent/provium.toml", explicit=True)
    assert isinstance(ei.value.__cause__, OSError)


def test_the_one_not_yet_implemented():
    from provium.host import lab
    from provium.lua import errors as lua_errors

    assert lua_errors.NotYetImplemented is lab.NotYetImplemented is provium.errors.NotYetImplemented
    assert str(provium.errors.NotYetImplemented("x", "(why)")) == "x is not yet implemented (why)"
