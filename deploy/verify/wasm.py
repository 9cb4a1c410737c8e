"""A tiny WASI module, assembled here byte by byte, that prints a marker line.

It lets the Wasm smoke check prove that a runtime *runs a module* without a toolchain on
the node or in the project: the check uploads these bytes and runs them.
"""

from __future__ import annotations

MARKER = "labdeploy-wasm-ok"


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _vec(items: list[bytes]) -> bytes:
    return _uleb(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    raw = text.encode()
    return _uleb(len(raw)) + raw


def _section(section_id: int, body: bytes) -> bytes:
    return bytes([section_id]) + _uleb(len(body)) + body


def _i32_const(value: int) -> bytes:
    assert 0 <= value < 64  # one-byte signed LEB128 is enough for these offsets
    return bytes([0x41, value])


def hello_module(text: str = MARKER) -> bytes:
    """A WASI ``_start`` that writes ``text`` and a newline to stdout with ``fd_write``."""
    data = (text + "\n").encode()
    assert 8 + len(data) <= 64, "the message must fit below the nwritten slot at offset 64"
    fd_write_type = bytes([0x60, 4, 0x7F, 0x7F, 0x7F, 0x7F, 1, 0x7F])
    start_type = bytes([0x60, 0, 0])
    imports = _name("wasi_snapshot_preview1") + _name("fd_write") + bytes([0x00, 0])
    exports = [_name("memory") + bytes([0x02, 0]), _name("_start") + bytes([0x00, 1])]
    code = (
        _i32_const(0)
        + _i32_const(8)
        + b"\x36\x02\x00"  # iovec.buf = 8
        + _i32_const(4)
        + _i32_const(len(data))
        + b"\x36\x02\x00"  # iovec.len
        + _i32_const(1)
        + _i32_const(0)
        + _i32_const(1)
        + b"\x41\xc0\x00"  # fd 1, iovs, 1, &nwritten=64
        + b"\x10\x00\x1a\x0b"
    )  # call fd_write; drop; end
    body = _uleb(0) + code
    segment = b"\x00" + _i32_const(8) + b"\x0b" + _uleb(len(data)) + data
    return (
        b"\x00asm\x01\x00\x00\x00"
        + _section(1, _vec([fd_write_type, start_type]))
        + _section(2, _vec([imports]))
        + _section(3, _vec([_uleb(1)]))
        + _section(5, _vec([b"\x00\x01"]))
        + _section(7, _vec(exports))
        + _section(10, _vec([_uleb(len(body)) + body]))
        + _section(11, _vec([segment]))
    )
