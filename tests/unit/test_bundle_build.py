"""deploy.bundle.build: recipes run in waves so an artifact is made only after what it is made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey, BundleStore
from deploy.bundle.build import Wanted, build
from deploy.bundle.recipes import BuildError, Recipe


@dataclass(frozen=True, kw_only=True)
class Concat(Recipe):
    """Writes its own text after the bytes of the artifacts it requires (read from the store)."""

    text: str
    store: BundleStore = field(compare=False)
    log: list[str] = field(compare=False)
    fail: bool = False

    def inputs(self) -> list[tuple[str, bytes]]:
        return [("text", self.text.encode())]

    def ref(self) -> str:
        return f"concat {self.text}"

    def build(self, out: Path) -> None:
        self.log.append(self.key.name)  # list.append is atomic: the pool's threads may share the log
        if self.fail:
            raise BuildError(f"{self.key.name} broke")
        parts = []
        for key in self.requires:
            found = self.store.get(key)
            assert found is not None, f"{key} was not built before {self.key}"
            parts.append(found.path.read_bytes())
        out.write_bytes(b"".join(parts) + self.text.encode())


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "bundle")


def _recipe(store: BundleStore, log: list[str], name: str, *requires: str, fail: bool = False) -> Concat:
    return Concat(key=ArtifactKey(name, "v1"), text=name, store=store, log=log, fail=fail,
                  requires=tuple(ArtifactKey(r, "v1") for r in requires))


def test_an_artifact_is_built_after_what_it_requires_whatever_the_listed_order(store: BundleStore) -> None:
    log: list[str] = []
    image = _recipe(store, log, "image", "bin-a", "bin-b")
    want = Wanted([image, _recipe(store, log, "bin-a"), _recipe(store, log, "bin-b")])
    lines = build(want, store, parallel=2)
    assert [(line.key.name, line.outcome) for line in lines] == [("image", "built"), ("bin-a", "built"),
                                                                 ("bin-b", "built")]
    assert log[-1] == "image"
    made = store.get(ArtifactKey("image", "v1"))
    assert made is not None
    assert made.path.read_bytes() == b"bin-abin-bimage"
    assert [line.outcome for line in build(want, store)] == ["cached"] * 3


def test_a_failed_prerequisite_fails_its_dependents_without_running_them(store: BundleStore) -> None:
    log: list[str] = []
    want = Wanted([_recipe(store, log, "image", "bin"), _recipe(store, log, "bin", fail=True),
                   _recipe(store, log, "other")])
    lines = {line.key.name: line for line in build(want, store, parallel=1)}
    assert lines["bin"].outcome == "failed"
    assert "bin broke" in lines["bin"].error
    assert (lines["image"].outcome, lines["image"].error) == ("failed", "needs bin@v1/linux/amd64, which failed")
    assert lines["other"].outcome == "built"
    assert "image" not in log
    assert store.get(ArtifactKey("image", "v1")) is None


def test_requires_that_form_a_cycle_are_refused_not_spun_on(store: BundleStore) -> None:
    log: list[str] = []
    want = Wanted([_recipe(store, log, "a", "b"), _recipe(store, log, "b", "a")])
    lines = build(want, store)
    assert [line.outcome for line in lines] == ["failed", "failed"]
    assert all("cycle" in line.error for line in lines)
    assert log == []


def test_a_requirement_already_in_the_store_is_not_rebuilt(store: BundleStore) -> None:
    log: list[str] = []
    build(Wanted([_recipe(store, log, "bin")]), store)
    log.clear()
    lines = build(Wanted([_recipe(store, log, "image", "bin")]), store)
    assert [(line.key.name, line.outcome) for line in lines] == [("image", "built")]
    assert log == ["image"]
