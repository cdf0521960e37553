"""Deleting a version collects the blobs nothing references any more. Registering identical content
at the same time must never lose one of them: tasks register, read and delete versions of the same
bytes in a loop, through each way artifacts come in (a source folder at register, AttachArtifacts,
UploadArtifacts), and every version that was registered verifies and reads back whole."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import grpc
import pytest

from trainforge.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.postgres]

TASKS = 4
ROUNDS = 30
# Several files, so a register's blobs are published over some milliseconds: the window in which a
# delete's collector used to see "no reference yet" and unlink one of them.
FILES = {f"shard-{i}.bin": os.urandom(192 * 1024) for i in range(6)} | {"config.json": b'{"model_type": "gc"}'}


def _upload_chunks(name: str, version: str):
    first = True
    for path, data in FILES.items():
        for offset in range(0, len(data), 64 * 1024):
            yield pb.UploadArtifactsRequest(model_id=name if first else "", version=version if first else "",
                                            path=path, data=data[offset:offset + 64 * 1024])
            first = False


def _register(registry, name: str, version: str, how: str, source: str) -> None:
    body = pb.ModelVersion(name=name, version=version, model_type="custom", source=source if how == "source" else "")
    registry.RegisterModel(pb.RegisterModelRequest(model_version=body))
    if how == "attach":
        registry.AttachArtifacts(pb.AttachArtifactsRequest(model_id=name, version=version, source_path=source))
    elif how == "upload":
        registry.UploadArtifacts(_upload_chunks(name, version))


def _problems(registry, name: str, version: str, *, read: bool = True) -> list[str]:
    """What is wrong with a registered version's artifacts: verify, then read every file."""
    found = []
    result = registry.VerifyModelVersion(pb.VerifyModelVersionRequest(model_id=name, version=version)).data
    if not result.ok:
        found.append(f"{name}:{version} verify: missing {list(result.missing)} mismatched {list(result.mismatched)}")
    for path, data in FILES.items() if read else ():
        try:
            chunks = registry.DownloadArtifact(pb.DownloadArtifactRequest(model_id=name, version=version, path=path))
            got = b"".join(c.data for c in chunks)
        except grpc.RpcError as err:
            found.append(f"{name}:{version} {path}: {err.code().name} {err.details()}")
            continue
        if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
            found.append(f"{name}:{version} {path}: read back different bytes")
    return found


def test_register_and_delete_of_identical_content_never_lose_a_blob(registry, models_root, settings):
    tag = uuid.uuid4().hex[:8]
    source = f"gc-race-{tag}"
    for path, data in FILES.items():
        (models_root / source).mkdir(parents=True, exist_ok=True)
        (models_root / source / path).write_bytes(data)
    problems: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(TASKS)

    def task(t: int) -> None:
        name, how = f"gc-race-{tag}-{t}", ("source", "attach", "upload", "source")[t % 4]
        try:
            start.wait()
            for r in range(ROUNDS):
                version = f"1.{r}.0"
                _register(registry, name, version, how, source)
                # Verify only, in the loop: the shorter a version lives, the more often a delete's
                # collector finds no reference to the content (reads are checked on the survivors).
                problems.extend(_problems(registry, name, version, read=False))
                if r < ROUNDS - 1:  # the last round's version survives, checked again below
                    registry.DeleteModelVersion(pb.DeleteModelVersionRequest(model_id=name, version=version))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(t,)) for t in range(TASKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert not problems, f"{len(problems)} problems, first: {problems[:5]}"
    for t in range(TASKS):
        assert not _problems(registry, f"gc-race-{tag}-{t}", f"1.{ROUNDS - 1}.0")

    # Deleting the survivors leaves no blob of this content behind.
    for t in range(TASKS):
        registry.DeleteModel(pb.DeleteModelRequest(model_id=f"gc-race-{tag}-{t}", force=True))
    left = [p for p, d in FILES.items() if (settings.artifacts_dir / "sha256" / hashlib.sha256(d).hexdigest()[:2]
                                           / hashlib.sha256(d).hexdigest()[2:]).exists()]
    assert not left, left
