"""Renders the OpenAPI (Swagger 2.0) document into gateway/docs.html, the page Envoy serves at
/api/docs. The page is self-contained — inline CSS, no scripts, nothing fetched from a network the
gateway may not have — and byte-identical for the same input, so scripts/check_generated.sh can
compare it like any other generated file.

    render_api_docs.py gateway/openapi.json gateway/docs.html
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any

OPENAPI_URL = "/api/docs/openapi.json"
# Envoy's direct_response refuses a body over max_direct_response_body_size_bytes (gateway/envoy.yaml).
MAX_BYTES = 2 * 1024 * 1024
# Deeper than any message in protos/trainforge/v1 (4 levels); only a guard against runaway nesting.
MAX_DEPTH = 8
METHOD_ORDER = ("get", "post", "put", "patch", "delete", "head", "options")

# Well-known types whose proto3 JSON form is not the message protoc-gen-swagger describes: Envoy's
# transcoder writes a Struct as a plain JSON object, a FieldMask as one comma-separated string, an
# Any as the packed message's fields plus `@type`. Shown as their JSON shape, never expanded.
WELL_KNOWN = {
    "protobufAny": ("object", "google.protobuf.Any: `@type` (the type URL) and the fields of the message it holds"),
    "protobufStruct": ("object", "google.protobuf.Struct: any JSON object"),
    "protobufValue": ("any", "google.protobuf.Value: any JSON value"),
    "protobufListValue": ("array", "google.protobuf.ListValue: any JSON array"),
    "protobufNullValue": ("null", "google.protobuf.NullValue: JSON `null`"),
    "protobufFieldMask": ("string", "google.protobuf.FieldMask: field paths separated by commas"),
}
FORMAT_NOTES = {
    "int64": "int64, as a decimal string",
    "uint64": "uint64, as a decimal string",
    "date-time": "RFC 3339 timestamp",
    "byte": "base64 bytes",
}


# ---------------------------------------------------------------------------------------------
# Text


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """Escapes text and renders `code` spans and `[label](url)` links; `[label][target]` reference
    links keep their label."""
    text = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))
    return re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r'<a href="\2">\1</a>', out)


def prose(text: str) -> str:
    """Proto comments as HTML: blank lines part paragraphs, `- ` lines are list items, other line
    breaks are the comment's wrapping — except before "Returns ...", which starts an error case."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines, items, current = [], [], None
        for raw in paragraph.split("\n"):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("- "):
                current = [line[2:]]
                items.append(current)
            elif current is not None and raw.startswith("  "):
                current.append(line)
            elif line.startswith("Returns ") and lines:
                lines.append("\n" + line)
            else:
                lines.append(line)
        if lines:
            body = inline(" ".join(lines)).replace(" \n", "<br>")
            out.append(f"<p>{body}</p>")
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(' '.join(item))}</li>" for item in items) + "</ul>")
    return "".join(out)


def breakable(dotted: str) -> str:
    """A dotted field path that may wrap after each dot: deep paths would widen the table."""
    return "<wbr>".join(esc(part) + "." for part in dotted.split(".")[:-1]) + esc(dotted.split(".")[-1])


def definition_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def display_name(name: str) -> str:
    """protoc-gen-swagger names definitions `<last package part><Message>`: v1ModelVersion."""
    for prefix, package in (("v1", ""), ("protobuf", "google.protobuf."), ("rpc", "google.rpc.")):
        if name.startswith(prefix) and name[len(prefix):][:1].isupper():
            return package + name[len(prefix):]
    return name


def anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


# ---------------------------------------------------------------------------------------------
# Schemas


class Schemas:
    """Turns schemas into type labels and nested field tables, resolving $refs against the
    document's definitions. A message already being expanded higher up is named, not re-expanded."""

    def __init__(self, definitions: dict[str, Any]):
        self.definitions = definitions

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        if "$ref" in schema:
            name = definition_name(schema["$ref"])
            return name, self.definitions.get(name, {})
        return None, schema

    def expandable(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """The message whose fields belong under a field of this schema, if any."""
        name, target = self.resolve(schema)
        if name in WELL_KNOWN or "enum" in target:
            return None, None
        if "properties" in target:
            return name, target
        return None, None

    def type_label(self, schema: dict[str, Any]) -> str:
        name, target = self.resolve(schema)
        if name in WELL_KNOWN:
            kind, _ = WELL_KNOWN[name]
            return f'{esc(kind)} <span class="msg">{esc(display_name(name))}</span>'
        if name is not None and name not in self.definitions:
            return f'<span class="msg">{esc(display_name(name))}</span> <em>(not defined)</em>'
        kind = target.get("type", "object" if name else "any")
        fmt = target.get("format")
        if kind == "array":
            return "array of " + self.type_label(target.get("items", {}))
        if kind == "object" and "additionalProperties" in target and "properties" not in target:
            return "map&lt;string, " + self.type_label(target["additionalProperties"]) + "&gt;"
        label = esc(kind)
        if "enum" in target:
            label = "enum " + label
        if fmt and fmt != kind:
            label += f' <span class="fmt">({esc(FORMAT_NOTES.get(fmt, fmt))})</span>'
        if name is not None:
            label += f' <span class="msg">{esc(display_name(name))}</span>'
        return label

    def description(self, schema: dict[str, Any], own: dict[str, Any]) -> str:
        """The field's own description, the enum values when it does not already list them, and
        the meaning of a well-known type."""
        name, target = self.resolve(schema)
        if target.get("type") == "array":
            name, target = self.resolve(target.get("items", {}))
        text = "\n\n".join(part for part in (own.get("title", ""), own.get("description", "")) if part)
        parts = [prose(text)] if text else []
        values = target.get("enum")
        if values and not all(v in text for v in values):
            parts.append('<p class="values">One of ' + ", ".join(f"<code>{esc(v)}</code>" for v in values) + "</p>")
        if name in WELL_KNOWN:
            parts.append(f'<p class="wkt">{inline(WELL_KNOWN[name][1])}</p>')
        return "".join(parts)

    def rows(self, properties: dict[str, Any], prefix: str, depth: int, stack: tuple[str, ...]) -> list[str]:
        out = []
        for field in sorted(properties):
            spec = properties[field]
            out.append(
                f'<tr><td class="field" style="padding-left:{0.6 + 1.4 * depth:.1f}em">'
                f'<span class="parent">{breakable(prefix)}</span><b>{esc(field)}</b></td>'
                f'<td class="type">{self.type_label(spec)}</td>'
                f'<td class="desc">{self.description(spec, spec)}</td></tr>'
            )
            out.extend(self.children(spec, prefix + field, depth + 1, stack))
        return out

    def children(self, spec: dict[str, Any], path: str, depth: int, stack: tuple[str, ...]) -> list[str]:
        _, target = self.resolve(spec)
        suffix = "."
        if target.get("type") == "array" and "items" in target:
            spec, suffix = target["items"], "[]."
        elif target.get("type") == "object" and "additionalProperties" in target and "properties" not in target:
            spec, suffix = target["additionalProperties"], ".<key>."
        name, message = self.expandable(spec)
        if message is None:
            return []
        if name in stack or depth > MAX_DEPTH:
            return [f'<tr><td class="field" style="padding-left:{0.6 + 1.4 * depth:.1f}em" colspan="3">'
                    f'<span class="parent">{breakable(path + suffix)}</span>… '
                    f'<em>the fields of {esc(display_name(name or ""))}, as above</em></td></tr>']
        return self.rows(message.get("properties", {}), path + suffix, depth, stack + (name or "",))

    def table(self, schema: dict[str, Any]) -> str:
        """A field table for a request body or response."""
        name, message = self.expandable(schema)
        if message is None:
            return f'<p class="schema-type">{self.type_label(schema)}</p>'
        caption = f'<span class="msg">{esc(display_name(name or ""))}</span>'
        if message.get("description"):
            caption += f' — {inline(" ".join(message["description"].split()))}'
        rows = self.rows(message.get("properties", {}), "", 0, (name or "",))
        if not rows:
            return f'<p class="schema-type">{caption}</p><p class="empty">No fields: the empty JSON object <code>{{}}</code>.</p>'
        return (f'<p class="schema-type">{caption}</p>'
                '<div class="scroll"><table class="fields"><thead><tr><th>Field</th><th>Type</th><th>Description</th>'
                "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


# ---------------------------------------------------------------------------------------------
# Page


def operations(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tag, path, method, operation), by tag, then path, then method."""
    found = []
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            if method not in METHOD_ORDER:
                continue
            tag = (op.get("tags") or ["Other"])[0]
            found.append((tag, path, method, op))
    return sorted(found, key=lambda o: (o[0], o[1], METHOD_ORDER.index(o[2])))


def method_badge(method: str) -> str:
    return f'<span class="method m-{method}">{method.upper()}</span>'


def path_html(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", r'<span class="param">{\1}</span>', esc(path))


def parameter_table(params: list[dict[str, Any]], schemas: Schemas) -> str:
    rows = []
    for p in params:
        required = '<span class="req">required</span>' if p.get("required") else "optional"
        rows.append(f'<tr><td class="field"><b>{esc(p["name"])}</b></td><td>{esc(p["in"])}</td>'
                    f'<td class="type">{schemas.type_label(p)}</td><td>{required}</td>'
                    f'<td class="desc">{schemas.description(p, p)}</td></tr>')
    return ('<div class="scroll"><table class="fields params"><thead><tr><th>Name</th><th>In</th><th>Type</th>'
            "<th></th><th>Description</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def render_operation(path: str, method: str, op: dict[str, Any], schemas: Schemas) -> str:
    op_id = op.get("operationId", f"{method} {path}")
    parts = [f'<section class="op" id="op-{anchor(op_id)}">',
             f'<header>{method_badge(method)}<code class="path">{path_html(path)}</code>'
             f'<span class="opid">{esc(op_id)}</span></header><div class="body">']
    text = "\n\n".join(t for t in (op.get("summary", ""), op.get("description", "")) if t)
    parts.append(prose(text) if text else '<p class="empty">No description.</p>')

    params = op.get("parameters", [])
    simple = [p for p in params if p.get("in") != "body"]
    bodies = [p for p in params if p.get("in") == "body"]
    if simple:
        parts.append("<h4>Parameters</h4>" + parameter_table(simple, schemas))
    for body in bodies:
        note = f' <span class="note">{inline(body["description"])}</span>' if body.get("description") else ""
        parts.append(f"<h4>Request body{note}</h4>" + schemas.table(body.get("schema", {})))

    for code in sorted(op.get("responses", {})):
        response = op["responses"][code]
        streamed = "(streaming responses)" in response.get("description", "")
        title = f"Response {esc(code)}"
        if streamed:
            title += ' <span class="note">a stream: one JSON message per line, each of this shape</span>'
        parts.append(f"<h4>{title}</h4>")
        if "schema" in response:
            parts.append(schemas.table(response["schema"]))
        else:
            parts.append(f'<p class="empty">{inline(response.get("description", "No body."))}</p>')
    parts.append('<p class="errors">Errors: a <a href="#errors">google.rpc.Status</a> object.</p>')
    parts.append("</div></section>")
    return "".join(parts)


def render(doc: dict[str, Any]) -> str:
    info = doc.get("info", {})
    schemas = Schemas(doc.get("definitions", {}))
    ops = operations(doc)
    tags = sorted({tag for tag, *_ in ops})
    title = info.get("title", "API")

    toc = []
    for tag in tags:
        entries = "".join(
            f'<li><a href="#op-{anchor(op.get("operationId", ""))}" title="{esc(method.upper())} {esc(path)}">'
            f'{method_badge(method)}<span>{esc(op.get("operationId", ""))}</span></a></li>'
            for t, path, method, op in ops if t == tag)
        toc.append(f'<h3><a href="#tag-{anchor(tag)}">{esc(tag)}</a></h3><ul>{entries}</ul>')

    sections = []
    for tag in tags:
        body = "".join(render_operation(path, method, op, schemas) for t, path, method, op in ops if t == tag)
        sections.append(f'<h2 id="tag-{anchor(tag)}">{esc(tag)}</h2>{body}')

    security = "".join(
        f"<li><code>{esc(name)}</code>: {esc(spec.get('type', ''))} in the <code>{esc(spec.get('name', ''))}</code> "
        f"{esc(spec.get('in', ''))}</li>"
        for name, spec in sorted(doc.get("securityDefinitions", {}).items()))
    facts = [
        f'<li>Machine-readable: <a href="{OPENAPI_URL}">{OPENAPI_URL}</a> (Swagger {esc(doc.get("swagger", ""))})</li>',
        f"<li>Base path <code>{esc(doc.get('basePath', '/'))}</code>; bodies are "
        f"{', '.join(f'<code>{esc(c)}</code>' for c in doc.get('consumes', []))}, "
        "field names as in the .proto files (snake_case)</li>",
        f"<li>{len(ops)} operations in {len(tags)} services</li>",
    ]
    if security:
        facts.append(f"<li>Security schemes:<ul>{security}</ul></li>")

    status = {"$ref": "#/definitions/rpcStatus"}
    errors = ('<h2 id="errors">Errors</h2><p>A failed call answers with an HTTP status derived from its gRPC '
              "code (INVALID_ARGUMENT and FAILED_PRECONDITION 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, "
              "NOT_FOUND 404, ALREADY_EXISTS and ABORTED 409, RESOURCE_EXHAUSTED 429, INTERNAL and DATA_LOSS 500, "
              "UNIMPLEMENTED 501, UNAVAILABLE 503) and a "
              "<code>google.rpc.Status</code> body. Its <code>details</code> carry a "
              "<code>google.rpc.ErrorInfo</code> (reason, domain, metadata) and, for bad input, a "
              "<code>google.rpc.BadRequest</code> listing every field violation at once.</p>"
              + schemas.table(status))

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} {esc(info.get("version", ""))}</title>
<style>{CSS}</style>
</head>
<body>
<nav>
<p class="nav-title"><a href="#top">{esc(title)}</a> <span class="version">{esc(info.get("version", ""))}</span></p>
<p class="nav-links"><a href="#errors">Errors</a> · <a href="{OPENAPI_URL}">openapi.json</a></p>
{"".join(toc)}
</nav>
<main id="top">
<h1>{esc(title)} <span class="version">v{esc(info.get("version", ""))}</span></h1>
{prose(info.get("description", ""))}
<ul class="facts">{"".join(facts)}</ul>
{errors}
{"".join(sections)}
<footer>Generated from <a href="{OPENAPI_URL}">{OPENAPI_URL}</a> by scripts/render_api_docs.py.</footer>
</main>
</body>
</html>
"""


CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--link:#0969da}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
code{font:0.88em/1.4 ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace;background:var(--soft);padding:0 .25em;border-radius:4px}
nav{position:fixed;top:0;left:0;bottom:0;width:270px;overflow-y:auto;padding:16px 14px;border-right:1px solid var(--line);background:#fbfcfd;font-size:13px}
nav h3{margin:16px 0 4px;font-size:13px}nav h3 a{color:var(--muted)}
nav ul{list-style:none;margin:0;padding:0}
nav li a{display:flex;align-items:baseline;gap:6px;padding:2px 4px;border-radius:4px;color:var(--fg)}
nav li a:hover{background:#eef1f4;text-decoration:none}
.nav-title{margin:0;font-weight:600;font-size:16px}.nav-title a{color:var(--fg)}
.nav-links{margin:4px 0 0}
main{margin-left:270px;padding:24px 40px 80px;max-width:1240px}
h1{margin:0 0 8px;font-size:28px}
h2{margin:40px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line);font-size:22px}
h4{margin:18px 0 6px;font-size:14px}
.version{font-size:.6em;font-weight:500;color:var(--muted);border:1px solid var(--line);border-radius:10px;padding:1px 8px;vertical-align:middle}
.facts{color:var(--muted)}
.method{display:inline-block;min-width:52px;text-align:center;font:700 11px/18px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#fff;border-radius:4px;padding:0 4px;flex:none}
.m-get{background:#0969da}.m-post{background:#1a7f37}.m-put{background:#9a6700}.m-patch{background:#8250df}.m-delete{background:#cf222e}.m-head,.m-options{background:#59636e}
.op{border:1px solid var(--line);border-radius:8px;margin:18px 0;overflow:hidden}
.op>header{display:flex;align-items:center;gap:10px;padding:8px 12px;background:var(--soft);border-bottom:1px solid var(--line)}
.op>header .path{background:none;padding:0;font-size:14px;font-weight:600;overflow-wrap:anywhere}
.op .param{color:#953800}
.opid{margin-left:auto;color:var(--muted);font-size:13px;font-weight:600}
.op .body{padding:4px 16px 12px}
.schema-type{margin:4px 0}.msg{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;color:#6639ba}
.fmt{color:var(--muted)}.note{font-weight:400;color:var(--muted)}
div.scroll{overflow-x:auto}
table.fields{border-collapse:collapse;width:100%;font-size:13.5px;margin:4px 0 8px}
table.fields th{text-align:left;font-size:12px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:4px 8px}
table.fields td{border-top:1px solid #eaeef2;padding:4px 8px;vertical-align:top}
table.fields td p{margin:0}table.fields td p+p,table.fields td ul{margin-top:4px}
table.fields td ul{padding-left:18px;margin-bottom:0}
td.field{min-width:10em;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
td.field .parent{color:#8c959f}
td.type{width:24%}
td.desc{width:46%}
.req{color:#cf222e;font-weight:600}
.values,.wkt{color:var(--muted)}
.empty,.errors{color:var(--muted);font-size:13.5px}
footer{margin-top:48px;color:var(--muted);font-size:13px}
@media (max-width:900px){nav{position:static;width:auto;border-right:0;border-bottom:1px solid var(--line)}main{margin-left:0;padding:16px}}
""".strip()


def main(source: str, target: str) -> None:
    page = render(json.loads(Path(source).read_text(encoding="utf-8")))
    size = len(page.encode("utf-8"))
    if size > MAX_BYTES:
        sys.exit(f"render_api_docs: {target} would be {size} bytes, over Envoy's {MAX_BYTES}-byte direct_response limit")
    with open(target, "w", encoding="utf-8", newline="\n") as f:
        f.write(page)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: render_api_docs.py OPENAPI_JSON DOCS_HTML")
    main(sys.argv[1], sys.argv[2])
