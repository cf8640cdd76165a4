"""The pydantic schemas mirror the proto messages field for field."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from protos.tierwise.v1 import router_pb2 as pb
from service.router.transport import schemas

MIRRORED = [
    name for name in pb.DESCRIPTOR.message_types_by_name
    if not name.endswith("Request") or name in {"RouteRequest", "RouteBatchRequest"}
]
#: Deliberate differences, each explained in ``service/router/transport/schemas.py``.
SHORTHANDS = {("ChatMessage", "content")}


def _args(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _check_field(message: str, field: FieldDescriptor, info: FieldInfo) -> None:
    annotation = info.annotation
    options = _args(annotation)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        assert typing.get_origin(annotation) is dict, (message, field.name)
        return
    if field.is_repeated:
        lists = [a for a in options if typing.get_origin(a) is list]
        assert lists, (message, field.name, annotation)
        options = typing.get_args(lists[0])
    elif field.has_presence and not info.is_required():
        # optional scalars and sub-messages: unset in proto is None in pydantic
        assert info.default is None and type(None) in options, (message, field.name)
    options = tuple(a for a in options if a is not type(None))
    if field.message_type is not None:
        assert [getattr(a, "__name__", "") for a in options] == [field.message_type.name]
    else:
        expected = {
            FieldDescriptor.TYPE_STRING: str,
            FieldDescriptor.TYPE_DOUBLE: float,
            FieldDescriptor.TYPE_INT32: int,
            FieldDescriptor.TYPE_BOOL: bool,
        }[field.type]
        assert expected in options, (message, field.name, annotation)


@pytest.mark.parametrize("name", MIRRORED)
def test_model_mirrors_proto_message(name: str) -> None:
    descriptor: Descriptor = pb.DESCRIPTOR.message_types_by_name[name]
    model: type[BaseModel] = getattr(schemas, name)
    assert list(model.model_fields) == list(descriptor.fields_by_name), name
    for field_name, field in descriptor.fields_by_name.items():
        info = model.model_fields[field_name]
        if (name, field_name) in SHORTHANDS:
            assert any(typing.get_origin(a) is list for a in _args(info.annotation))
            continue
        _check_field(name, field, info)


def test_every_proto_message_with_content_is_mirrored() -> None:
    empty = {n for n, d in pb.DESCRIPTOR.message_types_by_name.items() if not d.fields}
    assert set(pb.DESCRIPTOR.message_types_by_name) - set(MIRRORED) == empty


def test_enums_mirror_proto_enums() -> None:
    # tiers are configuration strings, so the proto has no enums; any added later must start
    # with an *_UNSPECIFIED = 0 member and be mirrored here
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED")
        mirrored = getattr(schemas, enum.name)
        assert [m.name for m in mirrored] == [v.name for v in enum.values]
