"""The `cloud` target: S3-compatible object storage through boto3.

Layout under `{prefix}/{model}/`:
  versions/{version}/{file}            every file of the version folder (and the GGUF, when given)
  versions/{version}/manifest.json     {files: [{path, key, sha256, size}]}, written after the files
  aliases/{alias}.json                 {version, manifest_key, manifest_sha256, updated_at}

A version's objects are uploaded with boto3's managed transfer (multipart at or above
`multipart_threshold`) with SHA-256 checksums, then each is checked against the local sha256 —
HeadObject with ChecksumMode=ENABLED; a multipart object's checksum is the composite
sha256(sha256(part 1) ‖ … ‖ sha256(part n))-n, recomputed here from the same part size; an object
whose checksum the server does not report, or whose composite differs, is read back and hashed.
Only then is the manifest written. The alias pointer is a single small PutObject, written last:
S3 replaces an object whole, so a reader that follows the pointer gets the old version or the new
one, each complete — never half a model. Readers use `read_alias`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from s3transfer.utils import ChunksizeAdjuster

from trainforge.core.deploy.targets.base import HealthResult, Progress, ShipRequest, ShipResult, error_cause
from trainforge.core.errors import (
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TrainforgeError,
    Unauthenticated,
    Unavailable,
)

MiB = 1024 * 1024
# S3's bucket naming rules (3-63 characters, lowercase letters, digits, dots and hyphens).
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DENIED = {"AccessDenied", "AllAccessDisabled"}
UNAUTHENTICATED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def _hash_file(path: Path, part_size: int | None) -> tuple[str, list[bytes]]:
    """sha256 hex of the file and, when `part_size` is given, the sha256 digest of each part."""
    whole, parts = hashlib.sha256(), []
    part, in_part = hashlib.sha256(), 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            whole.update(block)
            while part_size and block:
                take = block[:part_size - in_part]
                part.update(take)
                in_part += len(take)
                block = block[len(take):]
                if in_part == part_size:
                    parts.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if part_size and in_part:
        parts.append(part.digest())
    return whole.hexdigest(), parts


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class S3Target:
    name = "cloud"

    def __init__(self, endpoint_url: str, bucket: str, prefix: str = "trainforge", region: str = "us-east-1", *,
                 multipart_threshold: int = 64 * MiB, multipart_chunksize: int = 16 * MiB,
                 addressing_style: str = "path", connect_timeout_s: float = 10, max_attempts: int = 3):
        self.endpoint_url = (endpoint_url or "").rstrip("/")
        self.bucket = bucket or ""
        self.prefix = (prefix or "").strip("/")
        self.region = region
        # S3 refuses parts under 5 MiB (except the last); s3transfer raises smaller chunk sizes to it.
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize,
                                       max_concurrency=4)
        self._config = Config(s3={"addressing_style": addressing_style}, signature_version="s3v4",
                              connect_timeout=connect_timeout_s, read_timeout=120,
                              retries={"max_attempts": max_attempts, "mode": "standard"})
        self._client = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Target(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint_url).netloc or self.endpoint_url

    # -- configuration -----------------------------------------------------------------------------
    def validate(self) -> list[FieldViolation]:
        problems = []
        parts = urlsplit(self.endpoint_url)
        if not self.endpoint_url:
            problems.append(FieldViolation("s3_endpoint", "the S3 endpoint URL is required, "
                                                                 "e.g. https://s3.us-east-1.amazonaws.com"))
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(FieldViolation("s3_endpoint", f"{self.endpoint_url!r} is not an http(s) URL with a host"))
        if not self.bucket:
            problems.append(FieldViolation("s3_bucket", "the bucket name is required"))
        elif not BUCKET_NAME.match(self.bucket):
            problems.append(FieldViolation("s3_bucket", f"{self.bucket!r} is not a valid bucket name "
                                                           "(3-63 lowercase letters, digits, '.', '-')"))
        if self.prefix and not all(KEY_PART.match(p) for p in self.prefix.split("/")):
            problems.append(FieldViolation("s3_prefix", f"{self.prefix!r}: use letters, digits, '.', '_', '-' "
                                                           "and '/' between parts"))
        if not _credentials_configured():
            problems.append(FieldViolation("AWS_ACCESS_KEY_ID", "no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                                                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a "
                                                                "credentials file"))
        return problems

    def client(self):
        """One boto3 client per target (boto3 clients are thread-safe); credentials come from the
        standard chain: environment, shared credentials/config files, container or instance role."""
        with self._client_lock:
            if self._client is None:
                problems = self.validate()
                if problems:
                    raise InvalidArgument(problems)
                self._client = boto3.session.Session(region_name=self.region).client(
                    "s3", endpoint_url=self.endpoint_url, config=self._config)
            return self._client

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """boto3 errors as trainforge errors naming the host or the bucket; never a credential."""
        try:
            yield
        except TrainforgeError:
            raise
        except Exception as err:  # each kind is translated below; the rest re-raised
            if error_cause(err, (NoCredentialsError,)) is not None:
                raise InvalidArgument.one("AWS_ACCESS_KEY_ID", "no S3 credentials found") from err
            client_error = error_cause(err, (ClientError,))
            if client_error is not None:
                raise self._client_error(client_error, what) from err
            if error_cause(err, (BotoCoreError, ConnectionError)) is not None:
                raise Unavailable(f"cannot reach S3 at {self.host} while {what}: {type(err).__name__}",
                                  metadata={"host": self.host}) from err
            raise

    def _client_error(self, err: ClientError, what: str) -> TrainforgeError:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        meta = {"host": self.host, "bucket": self.bucket, "code": code}
        if code == "NoSuchBucket" or (status == 404 and what.startswith("checking bucket")):
            return FailedPrecondition(f"bucket {self.bucket!r} does not exist at {self.host} (setting s3_bucket)",
                                      metadata=meta)
        if code in UNAUTHENTICATED:
            return Unauthenticated(f"S3 at {self.host} refused the credentials ({code}) while {what}", metadata=meta)
        if code in DENIED or status == 403:
            return PermissionDenied(f"S3 at {self.host} denied {what} in bucket {self.bucket!r} ({code})",
                                    metadata=meta)
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
            return Unavailable(f"S3 at {self.host} answered {status} {code} while {what}", metadata=meta)
        if code in ("NoSuchKey", "404") or status == 404:
            return NotFound(f"{what}: not found in bucket {self.bucket!r} at {self.host}", metadata=meta)
        return FailedPrecondition(f"S3 at {self.host} answered {status} {code} while {what}", metadata=meta)

    # -- keys --------------------------------------------------------------------------------------
    def model_prefix(self, model_name: str) -> str:
        if not KEY_PART.match(model_name):
            raise InvalidArgument.one("model_name", f"{model_name!r} cannot be an S3 key part")
        return f"{self.prefix}/{model_name}" if self.prefix else model_name

    def version_prefix(self, model_name: str, version: str) -> str:
        if not KEY_PART.match(version):
            raise InvalidArgument.one("version", f"{version!r} cannot be an S3 key part")
        return f"{self.model_prefix(model_name)}/versions/{version}/"

    def alias_key(self, model_name: str, alias: str) -> str:
        if not KEY_PART.match(alias):
            raise InvalidArgument.one("alias", f"{alias!r} cannot be an S3 key part")
        return f"{self.model_prefix(model_name)}/aliases/{alias}.json"

    # -- ship --------------------------------------------------------------------------------------
    def ship(self, request: ShipRequest, progress: Progress) -> ShipResult:
        client = self.client()
        base = self.version_prefix(request.model_name, request.version)
        self.alias_key(request.model_name, request.alias)  # refuse a bad alias before uploading
        files = _version_files(request)
        with self._errors(f"checking bucket {self.bucket}"):
            client.head_bucket(Bucket=self.bucket)
        total = sum(p.stat().st_size for p in files.values())
        sent = {"bytes": 0}
        entries = []
        for index, (name, path) in enumerate(sorted(files.items())):
            size = path.stat().st_size
            multipart = size >= self.transfer.multipart_threshold
            part_size = ChunksizeAdjuster().adjust_chunksize(self.transfer.multipart_chunksize, size) \
                if multipart else None
            progress(f"hashing and uploading {name} ({size} bytes)", 0.9 * sent["bytes"] / max(total, 1))
            sha256, parts = _hash_file(path, part_size)
            entries.append({"path": name, "key": base + name, "sha256": sha256, "size": size,
                            "_parts": parts})
            with self._errors(f"uploading {base + name}"):
                self._upload(client, path, base + name)
            sent["bytes"] += size
        progress("verifying the uploaded objects", 0.9)
        problems = []
        for entry in entries:
            with self._errors(f"verifying {entry['key']}"):
                problem = self._verify(client, entry)
            if problem:
                problems.append(problem)
        if problems:
            raise DataLoss(f"S3 at {self.host} holds different bytes than were sent: " + "; ".join(problems),
                           metadata={"bucket": self.bucket, "prefix": base, "host": self.host})
        manifest = {
            "model": request.model_name, "version": request.version, "model_version_id": request.model_version_id,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "files": [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries],
        }
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        manifest_key, manifest_sha256 = base + "manifest.json", hashlib.sha256(body).hexdigest()
        with self._errors(f"writing {manifest_key}"):
            self._put(client, manifest_key, body)
        progress(f"s3://{self.bucket}/{base} verified", 1.0)
        return ShipResult(endpoint=f"s3://{self.bucket}/{base}", details={
            "endpoint_url": self.endpoint_url, "bucket": self.bucket, "prefix": base, "version": request.version,
            "model_version_id": request.model_version_id, "manifest_key": manifest_key,
            "manifest_sha256": manifest_sha256, "files": len(entries), "bytes": total,
        })

    def _upload(self, client, path: Path, key: str) -> None:
        client.upload_file(str(path), self.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                           Config=self.transfer)

    def _put(self, client, key: str, body: bytes) -> None:
        client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                          ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(hashlib.sha256(body).hexdigest()))

    def _verify(self, client, entry: dict) -> str | None:
        """None when the object holds the bytes that were sent, else what differs."""
        key = entry["key"]
        head = client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head["ContentLength"] != entry["size"]:
            return f"{key} holds {head['ContentLength']} bytes, sent {entry['size']}"
        reported = head.get("ChecksumSHA256")
        if reported and "-" not in reported:
            if reported == _b64(entry["sha256"]):
                return None
            return f"{key}: S3 reports sha256 {base64.b64decode(reported).hex()[:12]}…, sent {entry['sha256'][:12]}…"
        if reported and entry["_parts"]:
            composite = f"{base64.b64encode(hashlib.sha256(b''.join(entry['_parts'])).digest()).decode()}" \
                        f"-{len(entry['_parts'])}"
            if reported == composite:
                return None
        # No full-object SHA-256 from the server (or a composite over other part boundaries): read back.
        digest = hashlib.sha256()
        for chunk in client.get_object(Bucket=self.bucket, Key=key)["Body"].iter_chunks(MiB):
            digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            return f"{key}: read back sha256 {digest.hexdigest()[:12]}…, sent {entry['sha256'][:12]}…"
        return None

    # -- health ------------------------------------------------------------------------------------
    def health(self, result: ShipResult, timeout_s: float) -> HealthResult:
        """Reads the manifest back (sha256 as shipped) and HEADs every object it lists (size, and
        sha256 where the server reports a full-object one), within `timeout_s`."""
        started = time.monotonic()

        def done(healthy: bool, detail: str) -> HealthResult:
            return HealthResult(healthy, detail, (time.monotonic() - started) * 1000)

        try:
            client = boto3.session.Session(region_name=self.region).client(
                "s3", endpoint_url=self.endpoint_url,
                config=self._config.merge(Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                                                 retries={"max_attempts": 1})))
            with self._errors(f"reading {result.details['manifest_key']}"):
                manifest = self._read_manifest(client, result.details["manifest_key"],
                                               result.details["manifest_sha256"])
                for entry in manifest["files"]:
                    if time.monotonic() - started > timeout_s:
                        return done(False, f"checked {manifest['files'].index(entry)} of {len(manifest['files'])} "
                                           f"objects within {timeout_s} s")
                    head = client.head_object(Bucket=self.bucket, Key=entry["key"], ChecksumMode="ENABLED")
                    reported = head.get("ChecksumSHA256")
                    if head["ContentLength"] != entry["size"] or (
                            reported and "-" not in reported and reported != _b64(entry["sha256"])):
                        return done(False, f"{entry['key']} no longer matches its manifest")
        except TrainforgeError as err:
            return done(False, err.message)
        return done(True, f"{len(manifest['files'])} objects of {result.details['version']} present at "
                          f"s3://{self.bucket}/{result.details['prefix']}")

    def _read_manifest(self, client, key: str, sha256: str) -> dict:
        body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if hashlib.sha256(body).hexdigest() != sha256:
            raise DataLoss(f"{key} at {self.host} does not match the sha256 recorded when it was shipped",
                           metadata={"bucket": self.bucket, "key": key})
        return json.loads(body)

    # -- aliases -----------------------------------------------------------------------------------
    def point_alias(self, request: ShipRequest, result: ShipResult) -> None:
        self._write_pointer(request.model_name, request.alias, result)

    def restore_alias(self, model_name: str, alias: str, previous: ShipResult) -> None:
        self._write_pointer(model_name, alias, previous)

    def _write_pointer(self, model_name: str, alias: str, result: ShipResult) -> None:
        """The manifest is read and checked first: a pointer is never written to a missing or
        altered version."""
        client = self.client()
        key = self.alias_key(model_name, alias)
        details = result.details
        with self._errors(f"checking {details['manifest_key']} before pointing {alias} at it"):
            try:
                self._read_manifest(client, details["manifest_key"], details["manifest_sha256"])
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise FailedPrecondition(f"{details['manifest_key']} is gone from bucket {self.bucket!r}: "
                                             f"version {details['version']} cannot serve {alias}") from err
                raise
        pointer = {"model": model_name, "alias": alias, "version": details["version"],
                   "model_version_id": details.get("model_version_id"), "manifest_key": details["manifest_key"],
                   "manifest_sha256": details["manifest_sha256"],
                   "updated_at": datetime.now(timezone.utc).isoformat()}
        with self._errors(f"writing {key}"):
            self._put(client, key, (json.dumps(pointer, indent=2, sort_keys=True) + "\n").encode())

    def read_alias(self, model_name: str, alias: str) -> dict:
        """What a reader does: the pointer, then the manifest it names (sha256 checked). Returns the
        pointer with the manifest under "manifest". NotFound when the alias does not exist."""
        client = self.client()
        key = self.alias_key(model_name, alias)
        with self._errors(f"reading {key}"):
            try:
                pointer = json.loads(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise NotFound(f"alias {alias!r} of {model_name} does not exist in bucket {self.bucket!r}",
                                   metadata={"key": key}) from err
                raise
            pointer["manifest"] = self._read_manifest(client, pointer["manifest_key"], pointer["manifest_sha256"])
        return pointer

    # -- undeploy ----------------------------------------------------------------------------------
    def remove(self, model_name: str, alias: str, result: ShipResult) -> None:
        """Pointer first (when it points at this version), then the manifest, then the files: at no
        moment does a pointer or a manifest name an object that is gone."""
        client = self.client()
        details = result.details
        key = self.alias_key(model_name, alias)
        with self._errors(f"removing {details['prefix']}"):
            try:
                pointer = json.loads(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
                pointer = {}
            if pointer.get("manifest_key") == details["manifest_key"]:
                client.delete_object(Bucket=self.bucket, Key=key)
            client.delete_object(Bucket=self.bucket, Key=details["manifest_key"])
            keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=details["prefix"]) for obj in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def _version_files(request: ShipRequest) -> dict[str, Path]:
    """name in the version prefix -> local file: the version folder's files (sub-folders kept as
    key parts) and the GGUF under its own name."""
    folder = request.model_dir
    if not folder.is_dir():
        raise FailedPrecondition(f"the version folder {folder} does not exist", metadata={"model_dir": str(folder)})
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    if request.gguf_path is not None:
        if not request.gguf_path.is_file():
            raise FailedPrecondition(f"the GGUF {request.gguf_path} does not exist",
                                     metadata={"gguf_path": str(request.gguf_path)})
        files[request.gguf_path.name] = request.gguf_path
    if "manifest.json" in files:
        raise FailedPrecondition(f"{folder} holds a manifest.json, the name this target gives its own manifest")
    if not files:
        raise FailedPrecondition(f"the version folder {folder} is empty", metadata={"model_dir": str(folder)})
    return files


def _credentials_configured() -> bool:
    """Whether the credential chain finds keys without a network call: the instance-metadata
    provider is skipped (off EC2 it costs a 1 s timeout per attempt), and a container role counts
    when its variables are set."""
    if os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    session = botocore.session.Session()
    resolver = session.get_component("credential_provider")
    for name in ("iam-role", "container-role"):
        try:
            resolver.remove(name)
        except (ValueError, KeyError):
            pass
    try:
        return resolver.load_credentials() is not None
    except BotoCoreError:
        return False
