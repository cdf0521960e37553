"""The `huggingface` target: a version becomes one commit on the `main` branch of the repo
`{namespace}/{model_name}` on a configurable hub, and the alias (`production`, a deployment tag) is a
branch of that repo whose tree is the deployed version's tree, so that
`from_pretrained(repo, revision=alias)` loads what the alias serves.

The alias is a branch moved by a commit, not a tag: the hub has no call that moves a ref in place,
so a tag is moved by `delete_tag` + `create_tag`, and between the two a reader asking for
`revision=alias` gets 404. A commit on the alias branch replaces its whole tree in one step (the
hub updates the branch ref once, and `parent_commit` refuses a concurrent mover). The commit copies
the version's files server-side (CommitOperationCopy; LFS objects are not uploaded again), so the
alias branch holds the same blobs as the version's commit — the same sha256 for every file.

The token is read from the environment at each call (`token_env`, HF_TOKEN by default); it is never
stored on the target, and never put in a message, a log line, the details or the model card."""

from __future__ import annotations

import os

# hf_xet, when installed, makes huggingface_hub upload through the Xet protocol (a CAS service
# announced by the hub) and makes `upload_folder` split a folder into several commits
# (_upload_pipeline.pipelined_upload). A deploy must be one commit, and a self-hosted hub or a
# mirror serves only the LFS protocol: so Xet is off for this process. The variable is read when
# huggingface_hub.constants is first imported; `_hub_session` also sets the constant, for processes
# that imported huggingface_hub (through transformers) before this module.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import (
    CommitOperationCopy,
    CommitOperationDelete,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    hf_hub_url,
)
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session

from trainforge.core.deploy.targets.base import HealthResult, Progress, ShipRequest, ShipResult, error_cause
from trainforge.core.errors import (
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    TrainforgeError,
    Unauthenticated,
    Unavailable,
)

# What a transformers model folder needs besides its weights; anything else in the registry's
# folder (training state, manifests) stays home.
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
               "chat_template.jinja", "chat_template.json", "model.safetensors.index.json")
# Hub repo names: letters, digits, '-', '_', '.', at most 96, no '--' or '..' (the hub's own rule).
REPO_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# A hub model id, `namespace/name`: the hub's metadata check refuses any other base_model value.
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_HUB_LOCK = threading.RLock()


def git_blob_id(content: bytes) -> str:
    """The git object id the hub reports for a file stored without LFS."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_alias(alias: str) -> None:
    if not BRANCH_NAME.match(alias):
        raise InvalidArgument.one("alias", f"{alias!r} cannot name a hub branch (letters, digits, '-', '_', '.')")
    if alias == "main":
        raise InvalidArgument.one("alias", "'main' receives every shipped version; choose another alias")


@contextmanager
def _hub_session() -> Iterator[None]:
    """Deploy jobs run with HF_HUB_OFFLINE=1 (trainforge loads models from folders only), and
    huggingface_hub refuses every request while it is set. Reaching the configured hub is this
    target's whole job, so offline mode is lifted for the duration of its calls — under a lock,
    since the flag is process-wide — and Xet stays off (see the module's top)."""
    with _HUB_LOCK:
        saved = constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET
        constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = False, True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = saved


class HuggingFaceTarget:
    name = "huggingface"

    def __init__(self, endpoint: str, namespace: str, token_env: str = "HF_TOKEN", private: bool = True):
        self.endpoint = (endpoint or "").rstrip("/")
        self.namespace = namespace or ""
        self.token_env = token_env
        self.private = private

    def __repr__(self) -> str:
        return f"HuggingFaceTarget(endpoint={self.endpoint!r}, namespace={self.namespace!r}, token_env={self.token_env!r})"

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc or self.endpoint

    # -- configuration -----------------------------------------------------------------------------
    def validate(self) -> list[FieldViolation]:
        problems = []
        parts = urlsplit(self.endpoint)
        if not self.endpoint:
            problems.append(FieldViolation("huggingface_endpoint", "the hub's URL is required, e.g. https://huggingface.co"))
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(FieldViolation("huggingface_endpoint",
                                           f"{self.endpoint!r} is not an http(s) URL with a host"))
        if not REPO_NAME.match(self.namespace):
            problems.append(FieldViolation("huggingface_namespace",
                                           "a user or organization name on the hub is required"
                                           + (f"; {self.namespace!r} is not one" if self.namespace else "")))
        if not os.environ.get(self.token_env):
            problems.append(FieldViolation(self.token_env, f"set {self.token_env} to a hub token with write access "
                                                           f"to {self.namespace or 'the namespace'}; it is not set"))
        return problems

    def _token(self) -> str:
        problems = self.validate()
        if problems:
            raise InvalidArgument(problems)
        return os.environ[self.token_env]

    def _api(self, token: str) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=token, library_name="trainforge")

    def _repo_id(self, model_name: str) -> str:
        if not REPO_NAME.match(model_name):
            raise InvalidArgument.one("model_name", f"{model_name!r} is not a valid hub repo name (letters, digits, "
                                                    "'-', '_', '.'; at most 96)")
        return f"{self.namespace}/{model_name}"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Hub and transport errors as trainforge errors, naming the host and never the token."""
        try:
            yield
        except TrainforgeError:
            raise
        except Exception as err:  # each kind is translated below; the rest re-raised
            transport = error_cause(err, (httpx2.TransportError,))
            if transport is not None:
                raise Unavailable(f"cannot reach the Hugging Face hub at {self.host} while {what}: "
                                  f"{type(transport).__name__}", metadata={"host": self.host}) from err
            http = error_cause(err, (HfHubHTTPError,))
            if http is None:
                raise
            status = http.response.status_code if http.response is not None else 0
            message = (http.server_message or "").strip() or f"HTTP {status}"
            meta = {"host": self.host, "status": str(status)}
            if status == 401:
                raise Unauthenticated(f"the hub at {self.host} refused the token in {self.token_env} while {what}",
                                      metadata=meta) from err
            if status == 403:
                raise PermissionDenied(f"the token in {self.token_env} may not write to {self.namespace} at "
                                       f"{self.host} ({what}): {message}", metadata=meta) from err
            if status >= 500 or status == 429:
                raise Unavailable(f"the hub at {self.host} answered {status} while {what}: {message}",
                                  metadata=meta) from err
            raise FailedPrecondition(f"the hub at {self.host} answered {status} while {what}: {message}",
                                     metadata=meta) from err

    # -- ship --------------------------------------------------------------------------------------
    def ship(self, request: ShipRequest, progress: Progress) -> ShipResult:
        token = self._token()
        repo_id = self._repo_id(request.model_name)
        _check_alias(request.alias)
        with tempfile.TemporaryDirectory(prefix="trainforge-hf-") as tmp:
            folder = Path(tmp) / "repo"
            progress("building the repo folder", 0.0)
            sent = build_repo_folder(request, folder, repo_id)
            api = self._api(token)
            with _hub_session():
                with self._errors(f"creating {repo_id}"):
                    progress(f"creating {repo_id} at {self.host}", 0.1)
                    api.create_repo(repo_id, private=self.private, exist_ok=True, repo_type="model")
                with self._errors(f"uploading to {repo_id}"):
                    progress(f"uploading {len(sent)} files", 0.2)
                    info = api.upload_folder(
                        repo_id=repo_id, folder_path=folder, repo_type="model", delete_patterns="*",
                        commit_message=f"trainforge: {request.model_name}:{request.version}",
                        commit_description=f"model_version_id {request.model_version_id}, "
                                           f"deployment {request.deployment_id}")
                with self._errors(f"reading back {repo_id}"):
                    progress("verifying what the hub stored", 0.85)
                    self._verify(api, repo_id, info.oid, sent)
        progress(f"{repo_id}@{info.oid[:12]} verified", 1.0)
        return ShipResult(endpoint=f"{self.endpoint}/{repo_id}", details={
            "repo_id": repo_id, "commit": info.oid, "version": request.version,
            "files": {path: {"sha256": f["sha256"], "size": f["size"]} for path, f in sent.items()},
        })

    def _verify(self, api: HfApi, repo_id: str, commit: str, sent: dict[str, dict]) -> None:
        """Every file sent is in the commit with the same size and digest: sha256 for LFS files,
        the git blob id (sha1 of the content) for the others."""
        remote = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, revision=commit)
                  if isinstance(e, RepoFile)}
        problems = []
        for path, local in sorted(sent.items()):
            entry = remote.get(path)
            if entry is None:
                problems.append(f"{path} is missing")
            elif entry.lfs is not None:
                if entry.lfs.sha256 != local["sha256"] or entry.lfs.size != local["size"]:
                    problems.append(f"{path}: hub holds sha256 {entry.lfs.sha256[:12]}… ({entry.lfs.size} bytes), "
                                    f"sent {local['sha256'][:12]}… ({local['size']} bytes)")
            elif entry.blob_id != local["git_blob_id"] or entry.size != local["size"]:
                problems.append(f"{path}: hub holds blob {entry.blob_id[:12]}… ({entry.size} bytes), "
                                f"sent {local['git_blob_id'][:12]}… ({local['size']} bytes)")
        if problems:
            raise DataLoss(f"{repo_id}@{commit} at {self.host} differs from what was sent: " + "; ".join(problems),
                           metadata={"repo_id": repo_id, "commit": commit, "host": self.host})

    # -- health ------------------------------------------------------------------------------------
    def health(self, result: ShipResult, timeout_s: float) -> HealthResult:
        """Reads config.json back at the shipped commit and checks its sha256."""
        started = time.monotonic()
        repo_id, commit = result.details["repo_id"], result.details["commit"]
        expected = result.details.get("files", {}).get("config.json", {}).get("sha256")

        def done(healthy: bool, detail: str) -> HealthResult:
            return HealthResult(healthy, detail, (time.monotonic() - started) * 1000)

        token = os.environ.get(self.token_env)
        if not token:
            return done(False, f"{self.token_env} is not set")
        url = hf_hub_url(repo_id, "config.json", revision=commit, endpoint=self.endpoint)
        try:
            with _hub_session(), self._errors(f"reading config.json of {repo_id}"):
                response = get_session().get(url, headers=build_hf_headers(token=token, library_name="trainforge"),
                                             timeout=timeout_s)
                if response.status_code != 200:
                    return done(False, f"{self.host} answered {response.status_code} for config.json at {commit[:12]}")
                body = response.content
        except TrainforgeError as err:
            return done(False, err.message)
        if expected and hashlib.sha256(body).hexdigest() != expected:
            return done(False, f"config.json at {commit[:12]} does not match the shipped sha256")
        try:
            model_type = json.loads(body).get("model_type", "?")
        except ValueError:
            return done(False, f"config.json at {commit[:12]} is not JSON")
        return done(True, f"{repo_id}@{commit[:12]} serves config.json ({model_type}) from {self.host}")

    # -- aliases -----------------------------------------------------------------------------------
    def point_alias(self, request: ShipRequest, result: ShipResult) -> None:
        _check_alias(request.alias)
        self._serve(request.alias, result, f"trainforge: {request.alias} -> {request.model_name}:{request.version}")

    def restore_alias(self, model_name: str, alias: str, previous: ShipResult) -> None:
        _check_alias(alias)
        version = previous.details.get("version", previous.details["commit"][:12])
        self._serve(alias, previous, f"trainforge: {alias} back to {model_name}:{version}")

    def _serve(self, alias: str, result: ShipResult, title: str) -> None:
        """Makes branch `alias` hold the tree of the shipped commit, in one commit (or by creating
        the branch at that commit when it does not exist yet)."""
        token = self._token()
        repo_id, commit = result.details["repo_id"], result.details["commit"]
        api = self._api(token)
        with _hub_session(), self._errors(f"moving {alias} of {repo_id}"):
            refs = api.list_repo_refs(repo_id)
            if any(t.name == alias for t in refs.tags):
                raise FailedPrecondition(f"{repo_id} has a tag named {alias!r}, which would shadow the alias branch")
            head = next((b.target_commit for b in refs.branches if b.name == alias), None)
            if head is None:
                api.create_branch(repo_id, branch=alias, revision=commit)
                return
            wanted = self._tree(api, repo_id, commit)
            current = self._tree(api, repo_id, head)
            operations = [CommitOperationCopy(src_path_in_repo=p, path_in_repo=p, src_revision=commit)
                          for p in sorted(wanted) if current.get(p) != wanted[p]]
            operations += [CommitOperationDelete(path_in_repo=p) for p in sorted(set(current) - set(wanted))]
            if operations:
                api.create_commit(repo_id, operations, commit_message=title, revision=alias, parent_commit=head)

    @staticmethod
    def _tree(api: HfApi, repo_id: str, revision: str) -> dict[str, str]:
        """path -> git blob id at `revision` (equal ids, equal bytes)."""
        return {e.path: e.blob_id for e in api.list_repo_tree(repo_id, recursive=True, revision=revision)
                if isinstance(e, RepoFile)}

    def alias_commit(self, model_name: str, alias: str) -> str | None:
        """The head commit of the alias branch, None when the alias does not exist."""
        token = self._token()
        repo_id = self._repo_id(model_name)
        with _hub_session(), self._errors(f"reading the refs of {repo_id}"):
            refs = self._api(token).list_repo_refs(repo_id)
        return next((b.target_commit for b in refs.branches if b.name == alias), None)

    def remove(self, model_name: str, alias: str, result: ShipResult) -> None:
        """Deletes the alias branch when it serves this version, and empties `main` when its head is
        this version. Git history stays: the version's commit remains reachable by its id, as on any
        hub (only a squash of the whole repo's history would drop it)."""
        token = self._token()
        repo_id, commit = result.details["repo_id"], result.details["commit"]
        api = self._api(token)
        with _hub_session(), self._errors(f"removing {result.details.get('version', commit[:12])} from {repo_id}"):
            refs = api.list_repo_refs(repo_id)
            wanted = self._tree(api, repo_id, commit)
            alias_head = next((b.target_commit for b in refs.branches if b.name == alias), None)
            if alias_head is not None and alias != "main" and self._tree(api, repo_id, alias_head) == wanted:
                api.delete_branch(repo_id, branch=alias)
            main_head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
            if main_head is not None and self._tree(api, repo_id, main_head) == wanted:
                deletions = [CommitOperationDelete(path_in_repo=p) for p in sorted(wanted) if p != ".gitattributes"]
                if deletions:
                    api.create_commit(repo_id, deletions, revision="main", parent_commit=main_head,
                                      commit_message=f"trainforge: undeploy {model_name}:"
                                                     f"{result.details.get('version', commit[:12])}")


# -- the repo folder ---------------------------------------------------------------------------------
def build_repo_folder(request: ShipRequest, folder: Path, repo_id: str) -> dict[str, dict]:
    """Lays out the repo in `folder`: weights and tokenizer files linked from the version folder,
    the chat template both in tokenizer_config.json and as chat_template.jinja, a generation config,
    and the model card. Returns path -> {sha256, size, git_blob_id} of every file, as sent."""
    source = request.model_dir
    weights = sorted(p.name for p in source.glob("*.safetensors"))
    missing = [name for name in ("config.json",) if not (source / name).is_file()]
    if not weights:
        missing.append("*.safetensors")
    if missing:
        raise FailedPrecondition(f"{source} lacks {', '.join(missing)}: a hub repo needs the config and "
                                 "safetensors weights", metadata={"model_dir": str(source)})
    folder.mkdir(parents=True)
    for name in [*weights, *MODEL_FILES]:
        if (source / name).is_file():
            # A link: the weights are read once by the upload and once by our hash, never copied.
            (folder / name).symlink_to((source / name).resolve())
    _place_chat_template(source, folder)
    if not (folder / "generation_config.json").exists():
        (folder / "generation_config.json").write_text(json.dumps(generation_config(source), indent=2) + "\n")
    model_card(request, repo_id).save(folder / "README.md")
    sent = {}
    for path in sorted(folder.iterdir()):
        size = path.stat().st_size
        # git blob ids matter only for files stored without LFS: the small text ones.
        blob = git_blob_id(path.read_bytes()) if size <= 10 * 1024 * 1024 else ""
        sent[path.name] = {"sha256": _sha256(path), "size": size, "git_blob_id": blob}
    return sent


def _place_chat_template(source: Path, folder: Path) -> None:
    """transformers >= 4.43 writes the template to chat_template.jinja; older loaders, TGI and
    llama.cpp's converter read tokenizer_config.json's `chat_template`. Ship both."""
    config_path = source / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = None
    if (source / "chat_template.jinja").is_file():
        template = (source / "chat_template.jinja").read_text()
    elif (source / "chat_template.json").is_file():
        template = json.loads((source / "chat_template.json").read_text()).get("chat_template")
    if template is None and isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
    if template is None:
        return
    if not (folder / "chat_template.jinja").exists():
        (folder / "chat_template.jinja").write_text(template)
    if config_path.is_file() and config.get("chat_template") is None:
        (folder / "tokenizer_config.json").unlink()
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}, indent=2) + "\n")


def _token_ids(source: Path) -> dict[str, int]:
    """token text -> id from tokenizer.json (added tokens first, then the model's vocabulary)."""
    path = source / "tokenizer.json"
    if not path.is_file():
        return {}
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer.get("model", {}).get("vocab")
    ids = dict(vocab) if isinstance(vocab, dict) else {}
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def generation_config(source: Path) -> dict:
    """A generation config for a folder that has none: eos/bos/pad ids from config.json, else the
    tokenizer's special tokens. Without an eos id, generation through the hub's loaders never stops."""
    config = json.loads((source / "config.json").read_text())
    tok_config_path = source / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text()) if tok_config_path.is_file() else {}
    ids = _token_ids(source)
    out: dict = {"_from_model_config": True}
    for kind in ("bos", "eos", "pad"):
        value = config.get(f"{kind}_token_id")
        if value is None:
            token = tok_config.get(f"{kind}_token")
            token = token.get("content") if isinstance(token, dict) else token
            value = ids.get(token) if token else None
        if value is not None:
            out[f"{kind}_token_id"] = value
    if config.get("transformers_version"):
        out["transformers_version"] = config["transformers_version"]
    return out


def model_card(request: ShipRequest, repo_id: str) -> ModelCard:
    """README.md: hub metadata (base_model, datasets, tags, model-index with the version's metrics)
    and the lineage, written for the people who open the repo."""
    card = request.card or {}
    datasets = [str(d) for d in (card.get("datasets") or [])]
    metrics = {str(k): v for k, v in (card.get("metrics") or {}).items() if isinstance(v, (int, float))}
    tags = list(dict.fromkeys(["trainforge", *[str(t) for t in (card.get("tags") or [])]]))
    dataset = datasets[0] if datasets else "validation"
    results = [EvalResult(task_type="text-generation", task_name="Text Generation", dataset_type=dataset,
                          dataset_name=dataset, dataset_split="validation", metric_type=name, metric_name=name,
                          metric_value=float(value)) for name, value in sorted(metrics.items())]
    base_model = str(card.get("base_model") or "")
    # A local folder or a registry reference stays in the lineage section, out of the metadata.
    data = ModelCardData(model_name=request.model_name,
                         base_model=base_model if HUB_MODEL_ID.match(base_model) else None,
                         datasets=datasets or None, tags=tags, library_name="transformers",
                         pipeline_tag="text-generation", eval_results=results or None)
    lineage = card.get("lineage") or {}
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {request.model_name} {request.version}", "",
        str(card.get("description") or f"A fine-tune of {card.get('base_model') or 'a base model'}, "
                                       "trained and shipped by trainforge."), "",
        "## Use", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", revision="{request.alias}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{request.alias}")', "```", "",
        "## Evaluation", "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|", *[f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items())]]
    else:
        lines.append("No metrics were recorded for this version.")
    lines += ["", "## Lineage", "",
              f"- version: `{request.version}` (model version id `{request.model_version_id}`)",
              f"- deployment: `{request.deployment_id}`",
              f"- base model: `{card.get('base_model') or 'unknown'}`",
              f"- datasets: {', '.join(f'`{d}`' for d in datasets) or 'unknown'}", "",
              "```json", json.dumps(lineage, indent=2, sort_keys=True, default=str), "```", ""]
    return ModelCard("\n".join(lines))
