"""The two interleavings of a register and a delete's blob collector, forced one at a time on the
store itself (real PostgreSQL, real files): the collector runs while a register's files are being
copied in, and the collector starts while a register's transaction is open."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path

import pytest

from trainforge.core.db.pool import open_pool
from trainforge.core.errors import AlreadyExists
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.models import NewVersion
from trainforge.core.registry.store import RegistryStore

pytestmark = [pytest.mark.postgres]


class PausingArtifacts(ArtifactStore):
    """An artifact store that, once armed, stops the registering thread at one point until
    released: after the files were copied in (before the transaction), or after they were
    published (inside it)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.armed = ""
        self.reached, self.release = threading.Event(), threading.Event()

    def _pause(self, where: str) -> None:
        if self.armed == where:
            self.armed = ""
            self.reached.set()
            assert self.release.wait(30), "never released"

    def put_tree(self, folder: Path):  # the copy-in step before blobs were staged
        files = super().put_tree(folder)
        self._pause("copied")
        return files

    def stage_tree(self, folder: Path):
        staged = super().stage_tree(folder)
        self._pause("copied")
        publish = staged.publish

        def publish_then_pause() -> None:
            publish()
            self._pause("published")

        staged.publish = publish_then_pause
        return staged


@pytest.fixture
async def store(database_url, models_root, tmp_path):
    pool = await open_pool(database_url, min_size=1, max_size=6)
    try:
        yield RegistryStore(pool, PausingArtifacts(tmp_path / "artifacts"), models_root)
    finally:
        await pool.close()


def _model_dir(models_root: Path) -> str:
    name = f"gc-interleave-{uuid.uuid4().hex[:8]}"
    (models_root / name).mkdir(parents=True)
    for i in range(3):
        (models_root / name / f"part-{i}.bin").write_bytes(os.urandom(64 * 1024))
    return name


async def _wait(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30), "the register never reached its pause"


async def test_collector_running_while_a_register_copies_in_does_not_lose_its_blobs(store, models_root):
    source = _model_dir(models_root)
    await store.register(NewVersion(name=f"{source}-a", version="1", model_type="custom", source=source))
    store.artifacts.armed = "copied"
    register_b = asyncio.create_task(store.register(
        NewVersion(name=f"{source}-b", version="1", model_type="custom", source=source)))
    await _wait(store.artifacts.reached)
    # The only committed reference goes; the collector finds the content unreferenced.
    await store.delete_version(f"{source}-a", "1", force=True)
    store.artifacts.release.set()
    await register_b
    result = await store.verify(f"{source}-b", "1")
    assert result.ok, result
    folder = await store.materialize(f"{source}-b", "1", store.artifacts.root.parent / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.bin", "part-1.bin", "part-2.bin"]


async def test_collector_waits_for_a_register_that_published_the_same_blobs(store, models_root):
    source = _model_dir(models_root)
    await store.register(NewVersion(name=f"{source}-a", version="1", model_type="custom", source=source))
    store.artifacts.armed = "published"
    register_b = asyncio.create_task(store.register(
        NewVersion(name=f"{source}-b", version="1", model_type="custom", source=source)))
    await _wait(store.artifacts.reached)
    delete_a = asyncio.create_task(store.delete_version(f"{source}-a", "1", force=True))
    await asyncio.sleep(1.0)
    # The delete committed; its collector waits on the blobs' lock that the open register holds.
    assert not delete_a.done()
    store.artifacts.release.set()
    await register_b
    await delete_a
    result = await store.verify(f"{source}-b", "1")
    assert result.ok, result


async def test_a_failed_register_leaves_no_blob_behind(store, models_root):
    source = _model_dir(models_root)
    name = f"{source}-dup"
    await store.register(NewVersion(name=name, version="1", model_type="custom"))
    with pytest.raises(AlreadyExists):
        await store.register(NewVersion(name=name, version="1", model_type="custom", source=source))
    blobs = [p for p in (store.artifacts.root / "sha256").rglob("*") if p.is_file()]
    assert blobs == []
    assert list((store.artifacts.root / "tmp").iterdir()) == []
