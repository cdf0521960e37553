"""The chat format a deployed model needs outside transformers: the Ollama (Go text/template)
TEMPLATE, the stop tokens and the Modelfile, derived from the tokenizer's Jinja chat template.

Fine-tuned GGUFs that never stop in Ollama are the usual result of losing these (ollama#8363,
#6823): Ollama does not run the Jinja template that ships in the GGUF, it runs the Go TEMPLATE
of the Modelfile, and it stops only on the PARAMETER stop strings and the model's end-of-generation
token. So the template is not guessed from a name: the Jinja template is rendered on probe
conversations and must produce exactly ChatML (the only style derived today; SmolLM2 and the tiny
test models use it). Anything else is refused, never exported with a template that might be wrong.

Torch-free (jinja2 only): API processes import it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainforge.core.errors import FailedPrecondition

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Special tokens that end a text in the vocabularies we meet: they stop generation wherever they
# exist in the vocabulary, since a model fine-tuned briefly may still emit its pretraining end.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>")

# Ollama's Go template for ChatML. Ollama hands every chat (and every /api/generate prompt, whose
# system and prompt it turns into messages) to the template as .Messages, with the Modelfile's
# SYSTEM inserted as the first message when the request has none; the template ends with the
# assistant header, as the Jinja template does with add_generation_prompt=True.
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}" + IM_START + "{{ .Role }}\n{{ .Content }}" + IM_END + "\n{{ end }}"
    + IM_START + "assistant\n"
)

# Probe conversations: every role, a multi-turn history, and text that a careless template could
# strip or escape (leading/trailing spaces, a newline, quotes, braces).
_PROBE = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "  What is {2 + 2}?\nSay \"four\". "},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And <b>3 + 3</b>?"},
]
_PROBE_NO_SYSTEM = [{"role": "user", "content": "Hello there."}]


@dataclass(frozen=True)
class ChatFormat:
    """How to prompt and stop a chat model. `style` is "chatml"; `template` the Ollama Go
    template; `stop` the stop strings, in order; `default_system` the system prompt the Jinja
    template inserts when a chat has none (SmolLM2 has one), None when it inserts nothing."""

    style: str
    template: str
    stop: tuple[str, ...]
    default_system: str | None = None

    def ollama_parameters(self) -> dict[str, list[str]]:
        """The `parameters` of an Ollama /api/create request."""
        return {"stop": list(self.stop)}

    def render(self, messages: Sequence[Mapping[str, str]], *, system: str | None = None) -> str:
        """The prompt text Ollama's template produces for `messages` (with the Modelfile SYSTEM
        `system`, or default_system, inserted when the first message is not a system message)."""
        system = system if system is not None else self.default_system
        messages = list(messages)
        if system is not None and (not messages or messages[0].get("role") != "system"):
            messages.insert(0, {"role": "system", "content": system})
        return chatml(messages, add_generation_prompt=True)


def chatml(messages: Iterable[Mapping[str, str]], *, add_generation_prompt: bool) -> str:
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def render_jinja(chat_template: str, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool,
                 special_tokens: Mapping[str, str] | None = None) -> str:
    """Renders a Hugging Face chat template as transformers does (sandboxed, trim_blocks,
    lstrip_blocks, `raise_exception`); `special_tokens` supplies bos_token, eos_token, ...."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(chat_template)
    return template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                           **dict(special_tokens or {}))


def derive_chat_format(chat_template: str | None, special_tokens: Iterable[str], *,
                       eos_token: str | None = None, bos_token: str | None = None) -> ChatFormat:
    """The ChatFormat of a Jinja chat template, checked by rendering: the template must produce
    ChatML for the probe conversations, else FailedPrecondition saying what it produced.
    `special_tokens` are the vocabulary's special token strings (stop tokens are taken from them)."""
    if not chat_template:
        raise FailedPrecondition("the tokenizer has no chat template: an Ollama model needs an explicit TEMPLATE, "
                                 "and none can be derived (add chat_template to tokenizer_config.json)",
                                 reason="NO_CHAT_TEMPLATE")
    specials = set(special_tokens)
    variables = {"bos_token": bos_token or "", "eos_token": eos_token or ""}
    try:
        full = render_jinja(chat_template, _PROBE, add_generation_prompt=True, special_tokens=variables)
        bare = render_jinja(chat_template, _PROBE_NO_SYSTEM, add_generation_prompt=True, special_tokens=variables)
    except Exception as exc:  # noqa: BLE001 - any template failure means the same: cannot derive
        raise FailedPrecondition(f"the chat template does not render: {exc}", reason="CHAT_TEMPLATE_UNSUPPORTED") \
            from None
    expected = chatml(_PROBE, add_generation_prompt=True)
    if full != expected or not {IM_START, IM_END} <= specials:
        raise FailedPrecondition(
            "the chat template is not ChatML (<|im_start|>role\\ncontent<|im_end|>), the only style trainforge "
            f"derives an Ollama TEMPLATE for; it renders a probe chat as {full[:200]!r}",
            reason="CHAT_TEMPLATE_UNSUPPORTED")
    default_system = _default_system(bare)
    stop = [IM_START, IM_END]
    for token in (eos_token, *END_OF_TEXT_TOKENS):
        if token and token in specials and token not in stop:
            stop.append(token)
    return ChatFormat("chatml", CHATML_GO_TEMPLATE, tuple(stop), default_system)


def _default_system(rendered: str) -> str | None:
    """The system prompt a ChatML template inserted in front of a chat that had none."""
    plain = chatml(_PROBE_NO_SYSTEM, add_generation_prompt=True)
    if rendered == plain:
        return None
    head = f"{IM_START}system\n"
    if rendered.startswith(head) and rendered.endswith(plain):
        inserted = rendered[: -len(plain)]
        if inserted.endswith(f"{IM_END}\n") and inserted.count(IM_START) == 1:
            return inserted[len(head): -len(IM_END) - 1]
    raise FailedPrecondition(f"the chat template renders a chat without a system message as {rendered[:200]!r}, "
                             "which is not ChatML with an optional default system prompt",
                             reason="CHAT_TEMPLATE_UNSUPPORTED")


def _modelfile_string(value: str, what: str) -> str:
    if '"""' in value:
        raise FailedPrecondition(f'the {what} contains """, which a Modelfile cannot quote')
    return f'"""{value}"""'


def modelfile_text(source: str, chat: ChatFormat, *, system: str | None = None,
                   parameters: Mapping[str, object] | None = None) -> str:
    """A Modelfile: FROM `source` (a GGUF path or a blob reference), the explicit TEMPLATE, one
    PARAMETER stop line per stop string, further PARAMETERs, and SYSTEM (`system`, else the
    template's default system prompt, omitted when there is none)."""
    lines = [f"FROM {source}", f"TEMPLATE {_modelfile_string(chat.template, 'template')}"]
    lines += [f"PARAMETER stop {json.dumps(token)}" for token in chat.stop]
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    system = system if system is not None else chat.default_system
    if system is not None:
        lines.append(f"SYSTEM {_modelfile_string(system, 'system prompt')}")
    return "\n".join(lines) + "\n"


def read_tokenizer_chat_facts(model_dir: Path) -> tuple[str | None, list[str], str | None, str | None]:
    """(chat_template, special token strings, eos_token, bos_token) of a transformers folder,
    read from tokenizer_config.json, chat_template.jinja / chat_template.json and tokenizer.json
    without loading a tokenizer."""
    folder = Path(model_dir)
    config = _read_json(folder / "tokenizer_config.json") or {}
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None and (folder / "chat_template.json").is_file():
        template = (_read_json(folder / "chat_template.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: the default one is the chat template
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    tokenizer = _read_json(folder / "tokenizer.json") or {}
    specials = [t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")]
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = config.get(key)
        if isinstance(extra, list):
            specials += [t if isinstance(t, str) else t.get("content", "") for t in extra]
    return template, specials, _token_text(config.get("eos_token")), _token_text(config.get("bos_token"))


def chat_format_for_folder(model_dir: Path) -> ChatFormat:
    """derive_chat_format for a transformers folder (a registry version)."""
    template, specials, eos, bos = read_tokenizer_chat_facts(model_dir)
    return derive_chat_format(template, specials, eos_token=eos, bos_token=bos)


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _token_text(entry: object) -> str | None:
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


__all__ = ["CHATML_GO_TEMPLATE", "END_OF_TEXT_TOKENS", "ChatFormat", "chat_format_for_folder", "chatml",
           "derive_chat_format", "modelfile_text", "read_tokenizer_chat_facts", "render_jinja"]
