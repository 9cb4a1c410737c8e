"""The hand-assembled WASI module runs in a real WASI runtime (wasmtime) and prints its marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.verify.wasm import MARKER, hello_module


def test_module_prints_marker_under_wasi(tmp_path: Path) -> None:
    wasmtime = pytest.importorskip("wasmtime", reason="PyPI wasmtime (a real WASI runtime) is not installed")
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    config = wasmtime.WasiConfig()
    out = tmp_path / "stdout"
    config.stdout_file = str(out)
    store.set_wasi(config)
    instance = linker.instantiate(store, wasmtime.Module(engine, hello_module()))
    instance.exports(store)["_start"](store)
    assert out.read_text() == MARKER + "\n"


def test_module_text_is_chosen() -> None:
    assert b"hello-lab\n" in hello_module("hello-lab")
    with pytest.raises(AssertionError):
        hello_module("x" * 100)
