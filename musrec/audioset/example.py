"""``tf.train.SequenceExample``, the message of every AudioSet feature record, as a protobuf class of musrec's own.

The messages are declared here, field for field as TensorFlow's ``example.proto`` and ``feature.proto`` declare
them, in a descriptor pool of their own (``musrec.audioset`` package: nothing clashes with TensorFlow's when both are
loaded). They parse the same bytes as TensorFlow's class, with protobuf's own parser, without importing TensorFlow:
reading AudioSet for a build no longer loads its libraries (about 600 MiB resident and two seconds at start).
"""

from __future__ import annotations

from functools import cache
from typing import Any

PACKAGE = "musrec.audioset"
_REPEATED, _OPTIONAL = 3, 1  # FieldDescriptorProto.Label
_BYTES, _FLOAT, _INT64, _STRING, _MESSAGE = 12, 2, 3, 9, 11  # FieldDescriptorProto.Type


@cache
def sequence_example() -> Any:
    """The SequenceExample class: ``FromString(bytes)``, then ``.context.feature[key]`` and
    ``.feature_lists.feature_list[key].feature``, each a Feature with ``bytes_list``, ``float_list`` or
    ``int64_list``."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="musrec/audioset/example.proto", package=PACKAGE, syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> Any:
        added = proto.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            field = added.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name is not None:
                field.type_name = f".{PACKAGE}.{type_name}"
        return added

    def map_field(owner: Any, name: str, number: int, value: str) -> None:
        """``map<string, value> name = number``, as protoc writes it: a repeated nested entry type."""
        entry = owner.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_OPTIONAL, type=_STRING)
        entry.field.add(name="value", number=2, label=_OPTIONAL, type=_MESSAGE, type_name=f".{PACKAGE}.{value}")
        owner.field.add(name=name, number=number, label=_REPEATED, type=_MESSAGE,
                        type_name=f".{PACKAGE}.{owner.name}.{entry.name}")  # fmt: skip

    message("BytesList", ("value", 1, _REPEATED, _BYTES, None))
    message("FloatList", ("value", 1, _REPEATED, _FLOAT, None))
    message("Int64List", ("value", 1, _REPEATED, _INT64, None))
    feature = message(
        "Feature",
        ("bytes_list", 1, _OPTIONAL, _MESSAGE, "BytesList"),
        ("float_list", 2, _OPTIONAL, _MESSAGE, "FloatList"),
        ("int64_list", 3, _OPTIONAL, _MESSAGE, "Int64List"),
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    map_field(message("Features"), "feature", 1, "Feature")
    message("FeatureList", ("feature", 1, _REPEATED, _MESSAGE, "Feature"))
    map_field(message("FeatureLists"), "feature_list", 1, "FeatureList")
    message(
        "SequenceExample",
        ("context", 1, _OPTIONAL, _MESSAGE, "Features"),
        ("feature_lists", 2, _OPTIONAL, _MESSAGE, "FeatureLists"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.SequenceExample"))
