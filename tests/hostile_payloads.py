"""Hostile inputs that no library builds, shared by the hostile-input tests and bench/soak.py's fuzz stage."""

from __future__ import annotations


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def deep_struct_request(depth: int) -> bytes:
    """A GenerateRequest whose chat_template_kwargs (a google.protobuf.Struct, field 17) holds lists
    nested `depth` deep, as raw bytes (no protobuf library builds a message this deep)."""
    # Value.list_value (field 6) -> ListValue.values (field 1) -> Value ... from the inside out: each
    # level only prefixes a tag and a length, so the prefixes are computed first and joined once.
    prefixes, size = [], 0
    for _ in range(depth):
        for tag in (b"\x0a", b"\x32"):  # ListValue.values, then Value.list_value
            prefix = tag + _varint(size)
            prefixes.append(prefix)
            size += len(prefix)
    value = b"".join(reversed(prefixes))
    entry = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value  # Struct.FieldsEntry {key: "k", value}
    struct = b"\x0a" + _varint(len(entry)) + entry  # Struct.fields
    return b"\x0a\x02hi" + b"\x8a\x01" + _varint(len(struct)) + struct  # prompt "hi", chat_template_kwargs
