"""SpecType: the spec classes construct, compare, hash and refuse changes as frozen dataclasses do."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic_core import PydanticCustomError

from hxpc.compiler.spec import Health, HttpCheck, Resources, Secret, Service, pydantic_adapter


def test_construction_fills_defaults_and_fresh_factories() -> None:
    a, b = Service(image="x"), Service(image="x")
    assert (a.replicas, a.restart, a.resources, a.ports) == (1, "on-failure", Resources(), {})
    assert a.ports is not b.ports  # a factory, not one shared dict


def test_construction_refuses_missing_and_unknown_fields() -> None:
    with pytest.raises(TypeError, match="missing the keyword argument 'port'"):
        HttpCheck()
    with pytest.raises(TypeError, match="unexpected keyword argument 'replics'"):
        Service(replics=2)


def test_post_init_runs_on_construction() -> None:
    with pytest.raises(PydanticCustomError, match="exactly one of `env` or `file`"):
        Secret()
    with pytest.raises(PydanticCustomError, match="found: none"):
        Health()


def test_frozen_equal_hashable_and_printable() -> None:
    check = HttpCheck(port="http")
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.port = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del check.port
    assert check == HttpCheck(port="http") and check != HttpCheck(port="web")
    assert check != Resources() and hash(check) == hash(HttpCheck(port="http"))
    assert repr(check) == "HttpCheck(path='/', port='http')"
    assert dataclasses.replace(check, path="/ready") == HttpCheck(path="/ready", port="http")


def test_pydantic_builds_the_same_objects() -> None:
    built = pydantic_adapter().validate_python({"apiVersion": "hxpc/v1", "project": "p",
                                                "services": {"a": {"image": "x"}}})
    assert built.services["a"] == Service(image="x")
