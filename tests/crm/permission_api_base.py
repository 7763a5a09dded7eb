"""How the role matrix's API rows are written: a router's resource (list, create, read,
replace, change, delete) as rows, and one row of any other endpoint
(tests/crm/permission_matrix_api.py and permission_matrix_api_manage.py use them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.crm.permission_rows import (
    API,
    NOBODY,
    Row,
    expect,
    gone,
    one_more,
    refreshed,
    results,
    same_id,
)

# The API: every endpoint and method.


@dataclass(frozen=True)
class Resource:
    """A router's resource: list, create, retrieve, replace, change and delete."""

    path: str
    area: str
    model: str
    view: frozenset[str]
    add: frozenset[str] = NOBODY
    change: frozenset[str] = NOBODY
    delete: frozenset[str] = NOBODY
    obj: Callable[[Any], Any] | None = None
    delete_obj: Callable[[Any], Any] | None = None
    create: Callable[[Any], dict] | None = None
    replace: Callable[[Any], dict] | None = None
    patch: Callable[[Any], dict] | None = None
    changed: Callable[[Any, Any], bool] | None = None
    lookup: str = "pk"
    read_effect: Callable[[Any, Any], None] | None = None
    methods: tuple[str, ...] = ("list", "create", "retrieve", "update", "partial", "destroy")
    fmt: str = "json"
    notes: dict[str, str] = field(default_factory=dict)


def resource_rows(res: Resource) -> list[Row]:
    base = f"/api/{res.path}/"
    name = res.model.split(".")[1]
    pick = res.obj or (lambda w: None)
    to_delete = res.delete_obj or pick

    def detail(pick_):
        return lambda w: f"{base}{getattr(pick_(w), res.lookup)}/"

    def needs(op):
        return res.notes.get(op, f"{op}_{name}")

    id_path = base + ("{number}/" if res.lookup == "number" else "{id}/")
    changed = (lambda w, r: expect(res.changed(w, refreshed(pick)(w)))) if res.changed else None
    rows = {
        "list": Row(API, res.area, f"{name}: list", "GET", base, res.view, needs("view"),
                    url=lambda w: base, effect=results),
        "create": Row(API, res.area, f"{name}: create", "POST", base, res.add, needs("add"),
                      url=lambda w: base, data=res.create, ok=(201,),
                      effect=one_more(res.model), fmt=res.fmt),
        "retrieve": Row(API, res.area, f"{name}: read", "GET", id_path, res.view, needs("view"),
                        url=detail(pick),
                        effect=res.read_effect or same_id(pick, "id" if res.lookup == "pk" else res.lookup)),
        "update": Row(API, res.area, f"{name}: replace", "PUT", id_path, res.change,
                      needs("change"), url=detail(pick), data=res.replace, effect=changed),
        "partial": Row(API, res.area, f"{name}: change", "PATCH", id_path, res.change,
                       needs("change"), url=detail(pick), data=res.patch, effect=changed),
        "destroy": Row(API, res.area, f"{name}: delete", "DELETE", id_path, res.delete,
                       needs("delete"), url=detail(to_delete), ok=(204,),
                       effect=gone(res.model, to_delete)),
    }  # fmt: skip
    return [rows[method] for method in res.methods]


def api_row(
    area: str,
    action: str,
    method: str,
    path: str,
    allowed: frozenset[str],
    needs: str,
    url: Callable[[Any], str],
    *,
    data=None,
    ok=(200,),
    effect=None,
    fmt="json",
    refused=403,
) -> Row:
    return Row(
        API,
        area,
        action,
        method,
        path,
        allowed,
        needs,
        url=url,
        data=data,
        ok=ok,
        effect=effect,
        fmt=fmt,
        refused=refused,
    )
