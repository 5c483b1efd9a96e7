"""Secrets never reach a log line, an error message or a close reason: one redactor for the whole process.

:data:`REDACTOR` knows the configured secrets (server API keys, the OpenAI key, provider keys in stage options, the
secret-signing keys, ICE and database passwords; see :func:`config_secrets`) plus the shapes of secrets it cannot
know in advance (``Bearer …``, ``Basic …``, ``Token <long value>``, ``ek_…``, ``sk-…``/``rk-…``,
``openai-insecure-api-key.…`` subprotocols, ``xi-api-key``/``x-api-key``/``api-key`` header values, passwords in
URLs). For each configured secret
it also knows its encodings (base64 at every alignment, URL-encoding, hex) and matches *fragments*: any run of
:data:`FRAGMENT` characters of a secret or of an encoding that holds a digit or a capital is masked, so the last ten
characters of a key or a base64 copy of it are caught as well as the whole key.

:func:`install_log_redaction` puts it on every log record of the process, whatever logger made it (uvicorn,
httpx/httpcore, websockets, voicecall, …) and whatever handler shows it: the record factory redacts the message,
its arguments (keeping their types where nothing was found), the formatted traceback and the stack.

:func:`withheld` is for text that came from an upstream service and goes to a client: if it contains any fragment
of a secret it is dropped whole rather than patched.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

FRAGMENT = 8
"""Shortest run of a secret's characters that is masked in logs (shorter secrets are masked whole)."""
UPSTREAM_FRAGMENT = 6
"""Shortest run of a secret's characters that makes upstream text unfit for a client (:func:`withheld`)."""
MASK = "***"
_SECRET_NAME = re.compile(r"(?i)(api_?key|token|secret|password|credential)")
_ENV_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "VOICECALL_API_KEYS",
             "VOICECALL_SECRET_KEY", "VOICECALL_PREVIOUS_SECRET_KEYS")
_PATTERNS = re.compile(
    r"(?P<keep>\b(?:[Bb]earer|BEARER|Basic)\s+)[^\s,;'\"]+"
    r"|(?P<keep1>\bToken\s+)[A-Za-z0-9_\-.=]{20,}"
    r"|(?P<keep2>openai-insecure-api-key\.)[^\s,;'\"]+"
    r"|(?P<keep3>\b(?:xi-api-key|x-api-key|api-key|x-goog-api-key)[\"']?\s*[:=,]\s*b?[\"']?)[^\s,;'\")]+"
    r"|(?P<keep4>://[^:/@\s]*:)[^@\s]+(?=@)"
    r"|\b(?P<keep5>ek)_[A-Za-z0-9_\-]{6,}"
    r"|\b(?P<keep6>sk|rk)-[A-Za-z0-9_\-*.]{6,}"
)


def _sub(m: re.Match[str]) -> str:
    for name in ("keep", "keep1", "keep2", "keep3", "keep4"):
        if m.group(name) is not None:
            return m.group(name) + MASK
    if m.group("keep5") is not None:
        return "ek_" + MASK
    return m.group("keep6") + "-" + MASK


def encodings(secret: str) -> list[str]:
    """``secret`` as it may appear elsewhere: base64 (standard and URL-safe, at the three alignments, without the
    edge characters that depend on neighbours), URL-encoded and hex."""
    raw = secret.encode()
    out = {secret, quote(secret, safe=""), binascii.hexlify(raw).decode()}
    for shift in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * shift + raw).decode().rstrip("=")
            start = (shift * 4 + 2) // 3 + (1 if shift else 0)  # skip characters mixed with the padding bytes
            core = text[start:-2] if len(text) > start + 4 else ""
            if len(core) >= FRAGMENT:
                out.add(core)
    return [e for e in out if e]


def _random_looking(gram: str) -> bool:
    """Whether a piece of a secret is worth matching alone: it holds a digit or a capital. Pieces of plain lowercase
    words ("client", "voicecal") of a human-chosen key would otherwise mask ordinary words everywhere (the whole
    secret is still masked wherever it appears)."""
    return any(c.isdigit() or c.isupper() for c in gram)


class Redactor:
    """Masks secrets in text. Thread-safe; secrets are only ever added (several apps may share a process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._whole: list[str] = []  # secrets and their encodings, longest first: masked whole wherever they appear
        self._grams: frozenset[str] = frozenset()
        self._upstream_grams: frozenset[str] = frozenset()

    def add(self, secrets: Iterable[str | None]) -> None:
        with self._lock:
            new = {s for s in secrets if s and len(s) >= 4 and s not in self._secrets}
            if not new:
                return
            self._secrets |= new
            grams = set(self._grams)
            ugrams = set(self._upstream_grams)
            whole = list(self._whole)
            for secret in new:
                for form in encodings(secret):
                    whole.append(form)
                    grams.update(g for g in (form[i:i + FRAGMENT] for i in range(len(form) - FRAGMENT + 1))
                                 if _random_looking(g))
                    size = min(UPSTREAM_FRAGMENT, len(form))
                    ugrams.update(g for g in (form[i:i + size] for i in range(len(form) - size + 1))
                                  if _random_looking(g))
            self._whole = sorted(set(whole), key=len, reverse=True)
            self._grams = frozenset(grams)
            self._upstream_grams = frozenset(ugrams)

    def redact(self, text: str) -> str:
        """``text`` with every known secret, fragment, encoding and secret-shaped token masked."""
        for secret in self._whole:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _PATTERNS.sub(_sub, text)
        grams = self._grams
        if not grams or len(text) < FRAGMENT:
            return text
        spans: list[tuple[int, int]] = []
        i, n = 0, len(text) - FRAGMENT + 1
        while i < n:
            if text[i:i + FRAGMENT] in grams:
                start, end = i, i + FRAGMENT
                i += 1
                while i < n and text[i:i + FRAGMENT] in grams:
                    end = i + FRAGMENT
                    i += 1
                spans.append((start, end))
            else:
                i += 1
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(MASK)
            last = end
        out.append(text[last:])
        return "".join(out)

    def has_fragment(self, text: str, shapes: bool = True) -> bool:
        """Whether ``text`` holds any :data:`UPSTREAM_FRAGMENT`-long piece of a known secret (or of an encoding
        of one), or (``shapes``) anything secret-shaped."""
        if shapes and _PATTERNS.search(text):
            return True
        grams = self._upstream_grams
        return any(text[i:i + UPSTREAM_FRAGMENT] in grams for i in range(len(text) - UPSTREAM_FRAGMENT + 1)) or \
            any(secret in text for secret in self._whole)


REDACTOR = Redactor()
"""The process's redactor (logging is process-wide too)."""


def withheld(text: str, what: str = "message") -> str:
    """Upstream ``text`` for a client: redacted (secrets, their fragments and encodings masked), and withheld
    whole when even a short piece of a credential survives the masking."""
    if not text:
        return text
    clean = REDACTOR.redact(text)
    if REDACTOR.has_fragment(clean, shapes=False):
        return f"(upstream {what} withheld: it quoted part of a credential)"
    return clean


def safe_code(code: Any) -> str | None:
    """An upstream ``error.code`` fit to pass on: a short identifier that quotes no credential, else ``None``."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", code) or REDACTOR.has_fragment(code):
        return None
    return code


# ------------------------------------------------------------------------------------------ configuration
def config_secrets(config: Any) -> list[str]:
    """Every secret a configuration holds: ``SecretStr`` values anywhere, stage options named like a key, token,
    secret or password (fallback chains included), passwords in the store and state URLs, and the provider keys
    of the environment."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []

    def walk(value: Any, name: str = "") -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for key in type(value).model_fields:
                walk(getattr(value, key), key)
            for key, extra in (value.model_extra or {}).items():
                walk(extra, key)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, str(key))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, name)
        elif isinstance(value, str) and name and _SECRET_NAME.search(name) and "env" not in name.lower():
            found.append(value)
        elif isinstance(value, str) and "://" in value:
            m = re.search(r"://[^:/@\s]*:([^@\s]+)@", value)
            if m:
                found.append(m.group(1))

    walk(config)
    for var in _ENV_KEYS:
        found.extend(v.strip() for v in os.environ.get(var, "").split(",") if v.strip())
    return found


# ------------------------------------------------------------------------------------------ logging
_installed = False
_install_lock = threading.Lock()


def _clean(value: Any) -> Any:
    """``value`` (a log argument) redacted; its type is kept when nothing needed masking."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (bytes, bytearray, tuple, list,
                                                                                      dict)) else str(value)
    clean = REDACTOR.redact(text)
    if clean == text:
        return value
    return clean


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask secrets in ``record`` in place (message, arguments, traceback, stack)."""
    if isinstance(record.msg, str):
        record.msg = REDACTOR.redact(record.msg)
    else:
        record.msg = REDACTOR.redact(str(record.msg))
    args = record.args
    if isinstance(args, dict):
        record.args = {k: _clean(v) for k, v in args.items()}
    elif isinstance(args, tuple) and args:
        record.args = tuple(_clean(a) for a in args)
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = REDACTOR.redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = REDACTOR.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = REDACTOR.redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """The same redaction as a :class:`logging.Filter`, for handlers set up outside this process's factory."""

    def filter(self, record: logging.LogRecord) -> bool:  # logging API name
        redact_record(record)
        return True


def install_log_redaction(secrets: Iterable[str | None] = ()) -> None:
    """Register ``secrets`` and make every log record of the process pass through :func:`redact_record`
    (idempotent; later calls only add secrets)."""
    global _installed
    REDACTOR.add(secrets)
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
