"""docs/client.md and docs/recipes.md name every public class and method, and both clients have the same
methods with docstrings."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import fastkv.client as client_pkg
from fastkv.client import AsyncClient, Client
from fastkv.recipes import coordination, discovery, election, lock, monitoring, queue, watch

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _public_methods(cls: type) -> set[str]:
    return {n for n, f in inspect.getmembers(cls) if not n.startswith("_") and callable(f)}


def test_both_clients_have_the_same_documented_methods() -> None:
    sync, aio = _public_methods(Client), _public_methods(AsyncClient)
    assert sync == aio
    for cls in (Client, AsyncClient):
        for name in sync:
            assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name} has no docstring"


def test_client_reference_names_everything() -> None:
    text = (DOCS / "client.md").read_text()
    missing = [n for n in _public_methods(Client) if f"`{n}(" not in text]
    missing += [n for n in client_pkg.__all__ if f"`{n}`" not in text]
    assert not missing


@pytest.mark.parametrize("module", [coordination, discovery, election, lock, monitoring, queue, watch])
def test_recipes_reference_names_every_public_class(module: object) -> None:
    text = (DOCS / "recipes.md").read_text()
    names = [
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "") == getattr(module, "__name__", "")
        and not n.endswith("_steps")
        and n not in ("service_key", "leader_of")
    ]
    missing = [n for n in names if n not in text]
    assert not missing
