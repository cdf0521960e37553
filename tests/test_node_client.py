"""The Node.js client test (tests/node/registry_client.test.js) against the suite's gRPC server: the
contract, loaded from the .proto files by @grpc/proto-loader, works for a client in another
language, error details included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import google.api
import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"
TEST_FILE = NODE_DIR / "registry_client.test.js"
# googleapis-common-protos installs google/api/*.proto and google/rpc/*.proto beside its modules.
GOOGLEAPIS_PROTO_DIR = Path(google.api.__path__[0]).parents[1]

NODE = shutil.which("node")

pytestmark = [
    pytest.mark.node,
    pytest.mark.postgres,
    pytest.mark.skipif(NODE is None, reason="node is not on PATH (scripts/bootstrap.sh installs Node.js)"),
    pytest.mark.skipif(not (NODE_DIR / "node_modules").is_dir(),
                       reason="tests/node/node_modules is missing (scripts/bootstrap.sh runs npm ci there)"),
]


def test_node_registry_client(grpc_server, api_keys: dict[str, str]) -> None:
    assert (GOOGLEAPIS_PROTO_DIR / "google" / "rpc" / "error_details.proto").is_file(), GOOGLEAPIS_PROTO_DIR
    env = {
        **os.environ,
        "TRAINFORGE_GRPC": f"127.0.0.1:{grpc_server.port}",
        "GOOGLEAPIS_PROTO_DIR": str(GOOGLEAPIS_PROTO_DIR),
        # RegisterModel needs the trainer role; the test also checks that a call without a key fails.
        "TRAINFORGE_API_KEY": api_keys["trainer"],
        "NO_COLOR": "1",
    }
    result = subprocess.run([NODE, "--test", "--test-reporter=spec", str(TEST_FILE)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (
        f"node --test exited {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
