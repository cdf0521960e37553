"""Merges the per-file OpenAPI (Swagger 2.0) documents protoc-gen-swagger wrote into one and
completes it: title, version, the bearer security scheme, and a stable key order so that
regeneration is byte-for-byte reproducible."""

import json
import sys
import tomllib
from pathlib import Path


def merge(sources: list[str]) -> dict:
    doc: dict = {}
    for source in sorted(sources):
        part = json.loads(Path(source).read_text())
        if not doc:
            doc = part
            continue
        doc.setdefault("paths", {}).update(part.get("paths", {}))
        doc.setdefault("definitions", {}).update(part.get("definitions", {}))
        doc["tags"] = doc.get("tags", []) + [t for t in part.get("tags", []) if t not in doc.get("tags", [])]
    return doc


def main(target: str, *sources: str) -> None:
    doc = merge(list(sources))
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
