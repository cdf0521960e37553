"""Completes the OpenAPI (Swagger 2.0) document protoc-gen-swagger wrote: title, version, the
bearer security scheme, and a stable key order so that regeneration is byte-for-byte reproducible."""

import json
import sys
import tomllib
from pathlib import Path


def main(source: str, target: str) -> None:
    doc = json.loads(Path(source).read_text())
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    doc["info"] = {
        "title": "trainforge API",
        "version": project["version"],
        "description": project["description"]
        + " Generated from protos/trainforge/v1 by protoc-gen-swagger; errors are google.rpc.Status"
        " JSON objects with `code`, `message` and `details`.",
    }
    doc["basePath"] = "/"
    doc["schemes"] = ["http", "https"]
    doc["securityDefinitions"] = {"bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}}
    Path(target).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
