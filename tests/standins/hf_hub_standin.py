"""A stand-in Hugging Face hub: exactly the HTTP endpoints that huggingface_hub's upload, ref and
download flow calls (read from huggingface_hub 2.4's hf_api.py, _commit_api.py, lfs.py and
file_download.py), with repos, commits, branches and tags kept so that any revision resolves.

Endpoints (model repos only):
  POST   /api/repos/create                                   create_repo (409 when it exists)
  GET    /api/models/{ns}/{name}[/revision/{rev}]             model_info / repo_info
  POST   /api/validate-yaml                                  create_commit checks README.md's metadata
  POST   /api/models/{ns}/{name}/preupload/{rev}              upload mode per file (lfs or regular)
  POST   /{ns}/{name}.git/info/lfs/objects/batch              LFS batch API, "basic" transfer
  PUT    /lfs/{ns}/{name}/{oid}?signature=...                 the pre-signed upload URL batch returns
  POST   /lfs/{ns}/{name}/verify                              the LFS verify action (oid and size)
  POST   /api/models/{ns}/{name}/commit/{rev}                 NDJSON commit (file, lfsFile, deletedFile)
  GET    /api/models/{ns}/{name}/tree/{rev}[/{path}]          list_repo_tree (recursive, lfs metadata)
  POST   /api/models/{ns}/{name}/paths-info/{rev}             get_paths_info (form: paths, expand)
  GET    /api/models/{ns}/{name}/refs                         list_repo_refs
  POST   /api/models/{ns}/{name}/branch/{branch}              create_branch (startingPoint)
  DELETE /api/models/{ns}/{name}/branch/{branch}              delete_branch
  POST   /api/models/{ns}/{name}/tag/{rev}                    create_tag ({"tag": name})
  DELETE /api/models/{ns}/{name}/tag/{tag}                    delete_tag
  HEAD   /{ns}/{name}/resolve/{rev}/{path}                    hf_hub_download's metadata call
  GET    /{ns}/{name}/resolve/{rev}/{path}                    the file's bytes
  GET    /api/whoami-v2                                       whoami

Every call but the pre-signed upload needs `Authorization: Bearer <token>` (401 without). File
contents live on disk, content-addressed by sha256; repo metadata in memory. Every request's method,
URL and body is logged in `requests` so tests can prove what crossed the wire (and what did not)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

import yaml
from aiohttp import web

# The hub's default .gitattributes: these patterns are stored with LFS whatever their size.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.model", "*.onnx",
                "*.msgpack", "*.npy", "*.zip", "*.tar.*")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
# huggingface_hub inlines "regular" files base64 in the commit and states they are <= 5 MB
# (_commit_api.CommitOperationAdd._local_oid); anything larger or binary goes through LFS.
REGULAR_MAX_BYTES = 5 * 1024 * 1024
USER = web.RequestKey("user", str)


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class FileEntry:
    sha256: str
    size: int
    lfs: bool
    blob_id: str  # git blob id: of the content, or of the LFS pointer for LFS files


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(oid)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    url: str
    body: bytes


def _error(status: int, message: str, code: str | None = None, commit: str | None = None) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if commit:
        headers["X-Repo-Commit"] = commit
    return web.json_response({"error": message}, status=status, headers=headers)


class HubStandin:
    """Start with `start()` (port 0, own event loop in a thread), stop with `stop()`. `tokens` maps
    each accepted bearer token to a user name. `commit_fault`, when set, may change the file table of
    the next commit before it is stored (a hub that loses or alters a file)."""

    def __init__(self, root: Path, tokens: dict[str, str]):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.requests: list[LoggedRequest] = []
        self.commit_fault: Callable[[dict[str, FileEntry]], None] | None = None
        self._signing_key = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> HubStandin:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hf-hub-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the hub stand-in did not start within 10 s")
        return self

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._log_and_auth], client_max_size=1 << 31)
        r = app.router
        r.add_post("/api/repos/create", self.create_repo)
        r.add_get("/api/whoami-v2", self.whoami)
        r.add_post("/api/validate-yaml", self.validate_yaml)
        r.add_get("/api/models/{ns}/{name}", self.model_info)
        r.add_get("/api/models/{ns}/{name}/revision/{rev}", self.model_info)
        r.add_post("/api/models/{ns}/{name}/preupload/{rev}", self.preupload)
        r.add_post("/api/models/{ns}/{name}/commit/{rev}", self.commit)
        r.add_get("/api/models/{ns}/{name}/tree/{rev}", self.tree)
        r.add_get("/api/models/{ns}/{name}/tree/{rev}/{path:.+}", self.tree)
        r.add_post("/api/models/{ns}/{name}/paths-info/{rev}", self.paths_info)
        r.add_get("/api/models/{ns}/{name}/refs", self.refs)
        r.add_post("/api/models/{ns}/{name}/branch/{branch}", self.create_branch)
        r.add_delete("/api/models/{ns}/{name}/branch/{branch}", self.delete_branch)
        r.add_post("/api/models/{ns}/{name}/tag/{rev}", self.create_tag)
        r.add_delete("/api/models/{ns}/{name}/tag/{tag}", self.delete_tag)
        r.add_post("/{ns}/{name}.git/info/lfs/objects/batch", self.lfs_batch)
        r.add_put("/lfs/{ns}/{name}/{oid}", self.lfs_upload)
        r.add_post("/lfs/{ns}/{name}/verify", self.lfs_verify)
        r.add_get("/{ns}/{name}/resolve/{rev}/{path:.+}", self.resolve)  # HEAD as well
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def read(self, repo_id: str, revision: str, path: str) -> bytes:
        entry = self.repos[repo_id].resolve(revision).files[path]
        return self.object_path(entry.sha256).read_bytes()

    # -- middleware --------------------------------------------------------------------------------
    @web.middleware
    async def _log_and_auth(self, request: web.Request, handler):
        body = await request.read()
        with self._lock:
            self.requests.append(LoggedRequest(request.method, str(request.rel_url), body))
        if not request.path.startswith("/lfs/") or request.path.endswith("/verify"):
            auth = request.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            if token not in self.tokens:
                return _error(401, "Invalid credentials in Authorization header")
            request[USER] = self.tokens[token]
        return await handler(request)

    def _repo(self, request: web.Request) -> Repo | None:
        return self.repos.get(f"{request.match_info['ns']}/{request.match_info['name']}")

    def _store(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self.object_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha

    def _new_commit(self, repo: Repo, parent: str | None, title: str, files: dict[str, FileEntry]) -> Commit:
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        seed = json.dumps([parent, title, date, secrets.token_hex(8),
                           sorted((p, e.sha256) for p, e in files.items())]).encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), parent, title, date, files)
        repo.commits[commit.oid] = commit
        return commit

    def _regular_entry(self, content: bytes) -> FileEntry:
        return FileEntry(self._store(content), len(content), False, git_blob_id(content))

    def _lfs_entry(self, sha256: str, size: int) -> FileEntry:
        return FileEntry(sha256, size, True, git_blob_id(lfs_pointer(sha256, size)))

    def _file_json(self, path: str, entry: FileEntry, commit: Commit | None = None, expand: bool = False) -> dict:
        item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        if expand and commit is not None:
            item["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return item

    def _signature(self, repo_id: str, oid: str) -> str:
        return hmac.new(self._signing_key, f"{repo_id}:{oid}".encode(), hashlib.sha256).hexdigest()

    # -- handlers ----------------------------------------------------------------------------------
    async def whoami(self, request: web.Request) -> web.Response:
        user = request[USER]
        return web.json_response({"type": "user", "name": user, "fullname": user, "orgs": [],
                                  "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    async def create_repo(self, request: web.Request) -> web.Response:
        payload = await request.json()
        name, organization = payload.get("name"), payload.get("organization") or request[USER]
        if payload.get("type") not in (None, "model"):
            return _error(400, "this stand-in serves model repos only")
        repo_id = f"{organization}/{name}"
        if repo_id in self.repos:  # the hub names the existing repo's URL with the 409
            return web.json_response({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                     status=409, headers={"X-Error-Message": "You already created this model repo"})
        repo = Repo(repo_id, payload.get("visibility", "public") != "public")
        # A new repo on the hub starts with one commit that adds .gitattributes.
        first = self._new_commit(repo, None, "initial commit", {".gitattributes": self._regular_entry(GITATTRIBUTES)})
        repo.branches["main"] = first.oid
        self.repos[repo_id] = repo
        return web.json_response({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": secrets.token_hex(12)})

    async def validate_yaml(self, request: web.Request) -> web.Response:
        content = (await request.json()).get("content", "")
        errors: list[dict] = []
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1]) or {}
            except yaml.YAMLError as err:
                return web.json_response({"errors": [{"message": f"invalid YAML: {err}"}]}, status=400)
            for index in meta.get("model-index", []) or []:
                if "name" not in index:
                    errors.append({"message": "model-index entry without name"})
                for result in index.get("results", []):
                    if not ({"task", "dataset", "metrics"} <= set(result)):
                        errors.append({"message": "model-index result needs task, dataset and metrics"})
        return web.json_response({"errors": errors, "warnings": []}, status=400 if errors else 200)

    async def model_info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info.get("rev", "main"))
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        blobs = request.query.get("blobs", "").lower() == "true"
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        return web.json_response({"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid,
                                  "private": repo.private, "siblings": siblings, "tags": [],
                                  "lastModified": commit.date, "createdAt": commit.date})

    async def preupload(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info["rev"])
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        files = []
        for item in (await request.json())["files"]:
            path, size = item["path"], item["size"]
            sample = base64.b64decode(item["sample"])
            lfs = any(fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS) or size > REGULAR_MAX_BYTES \
                or b"\0" in sample
            existing = commit.files.get(path)
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.blob_id)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return web.json_response({"files": files, "commitOid": commit.oid})

    async def lfs_batch(self, request: web.Request) -> web.Response:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        payload = await request.json()
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            return _error(400, "only the basic upload transfer is served")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            if oid in repo.lfs_objects and self.object_path(oid).stat().st_size == size:
                objects.append({"oid": oid, "size": size})  # already there: no actions
                continue
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.url}/lfs/{repo_id}/{oid}?signature={self._signature(repo_id, oid)}"},
                "verify": {"href": f"{self.url}/lfs/{repo_id}/verify"},
            }})
        return web.json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                                 content_type="application/vnd.git-lfs+json")

    async def lfs_upload(self, request: web.Request) -> web.Response:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        oid = request.match_info["oid"]
        if not hmac.compare_digest(request.query.get("signature", ""), self._signature(repo_id, oid)):
            return _error(403, "bad signature")
        content = await request.read()
        if hashlib.sha256(content).hexdigest() != oid:
            return _error(400, "content does not match the oid")
        self._store(content)
        self.repos[repo_id].lfs_objects.add(oid)
        return web.Response(status=200)

    async def lfs_verify(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        payload = await request.json()
        oid, size = payload["oid"], payload["size"]
        if repo is None or oid not in repo.lfs_objects or self.object_path(oid).stat().st_size != size:
            return _error(404, f"object {oid} of size {size} not found")
        return web.json_response({"success": True})

    async def commit(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        branch = request.match_info["rev"]
        if branch not in repo.branches:
            return _error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return _error(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        head = repo.commits[repo.branches[branch]]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            return _error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return _error(400, "file content must be base64")
                files[value["path"]] = self._regular_entry(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in repo.lfs_objects:
                    return _error(422, f"LFS object {oid} of {value['path']} was never uploaded")
                files[value["path"]] = self._lfs_entry(oid, self.object_path(oid).stat().st_size)
            elif key == "deletedFile":
                if value["path"] not in files:
                    return _error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            else:
                return _error(400, f"unknown operation {key}")
        if self.commit_fault is not None:
            self.commit_fault(files)
        new = self._new_commit(repo, head.oid, header.get("summary", ""), files)
        repo.branches[branch] = new.oid
        return web.json_response({"success": True, "commitOid": new.oid, "pullRequestUrl": None,
                                  "commitUrl": f"{self.url}/{repo.repo_id}/commit/{new.oid}"})

    async def tree(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info["rev"])
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        base = request.match_info.get("path", "").strip("/")
        prefix = base + "/" if base else ""
        recursive = request.query.get("recursive", "false").lower() == "true"
        expand = request.query.get("expand", "false").lower() == "true"
        items, folders = [], set()
        for path, entry in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                items.append(self._file_json(path, entry, commit, expand))
        if base and not items and not folders:
            return _error(404, f"{base} does not exist at {commit.oid}", "EntryNotFound", commit.oid)
        listing = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "path": f}
                   for f in sorted(folders)] + items
        return web.json_response(listing)

    async def paths_info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info["rev"])
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        form = await request.post()
        expand = str(form.get("expand", "false")).lower() == "true"
        found = [self._file_json(p, commit.files[p], commit, expand) for p in form.getall("paths", [])
                 if p in commit.files]
        return web.json_response(found)

    async def refs(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        return web.json_response({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o} for n, o in repo.tags.items()],
            "converts": [],
        })

    async def create_branch(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        branch = request.match_info["branch"]
        if branch in repo.branches or branch in repo.tags:
            return _error(409, f"Reference {branch} already exists")
        payload = await request.json() if request.can_read_body else {}
        start = repo.resolve(payload.get("startingPoint") or "main")
        if start is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        repo.branches[branch] = start.oid
        return web.json_response({"success": True})

    async def delete_branch(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        branch = request.match_info["branch"]
        if repo is None or branch not in repo.branches:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        if branch == "main":
            return _error(403, "the default branch cannot be deleted")
        del repo.branches[branch]
        return web.json_response({"success": True})

    async def create_tag(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info["rev"])
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        tag = (await request.json())["tag"]
        if tag in repo.tags or tag in repo.branches:
            return _error(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit.oid
        return web.json_response({"success": True})

    async def delete_tag(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        tag = request.match_info["tag"]
        if repo is None or tag not in repo.tags:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        del repo.tags[tag]
        return web.json_response({"success": True})

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        commit = repo.resolve(request.match_info["rev"])
        if commit is None:
            return _error(404, "Invalid rev id", "RevisionNotFound")
        path = request.match_info["path"]
        entry = commit.files.get(path)
        if entry is None:
            return _error(404, "Entry not found", "EntryNotFound", commit.oid)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.blob_id}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        return web.FileResponse(self.object_path(entry.sha256), headers=headers)
