"""Who decides which session fields: the server decides the model, the instructions, the tools and (unless
``openaiRealtime.browserOverrides`` says otherwise) the voice; clients decide the rest.

Two kinds of client:

* **trusted** — authenticated with one of ``server.apiKeys`` (or anonymous when none is configured): a backend that
  could hold the OpenAI key itself. Its ``session`` objects are taken as they are, except that the model is always
  the configured one.
* **browser** — authenticated with a client secret (``ek_…``) that this server handed out. Of the *locked* fields
  (:data:`LOCKED`) it may set only those named in ``browserOverrides``; everything else it sends (formats, turn
  detection, transcription, modalities…) passes. The same fields are dropped from the per-response overrides of
  ``response.create``, and while ``instructions`` is locked a browser may not add ``system`` messages (a second
  way to instruct the model): :func:`restrict_client_event`.

Names in ``browserOverrides`` are session field names; a few name nested fields (:data:`NESTED`): ``voice`` is
``audio.output.voice``, ``speed`` is ``audio.output.speed``, ``turn_detection`` is ``audio.input.turn_detection``,
``transcription`` is ``audio.input.transcription``, ``noise_reduction`` is ``audio.input.noise_reduction``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from voicecall.config import OpenAIRealtimeConfig

NESTED: dict[str, tuple[str, ...]] = {
    "voice": ("audio", "output", "voice"),
    "speed": ("audio", "output", "speed"),
    "output_format": ("audio", "output", "format"),
    "input_format": ("audio", "input", "format"),
    "turn_detection": ("audio", "input", "turn_detection"),
    "transcription": ("audio", "input", "transcription"),
    "noise_reduction": ("audio", "input", "noise_reduction"),
}
LOCKED: tuple[str, ...] = ("instructions", "tools", "tool_choice", "prompt", "voice")
"""Fields a browser may not change unless ``browserOverrides`` names them (``model`` is never changeable)."""
SESSION_KEYS = frozenset({"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
                          "max_output_tokens", "tracing", "truncation", "prompt", "include"})
"""The fields of a GA session *request* (``RealtimeSessionCreateRequestGA``); ``id``, ``object`` and ``expires_at``
of a session *answer* are not among them."""


def path_of(name: str) -> tuple[str, ...]:
    """The key path of a ``browserOverrides`` name."""
    return NESTED.get(name, (name,))


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``patch``, recursively for nested objects (new dict; inputs untouched)."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(d: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    cur: Any = d
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return False, None
        cur = cur[key]
    return True, cur


def _put(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nxt = d.get(key)
        if not isinstance(nxt, dict):
            nxt = d[key] = {}
        d = nxt
    d[path[-1]] = copy.deepcopy(value)


def _drop(d: dict[str, Any], path: tuple[str, ...]) -> bool:
    parents: list[dict[str, Any]] = []
    cur: Any = d
    for key in path[:-1]:
        if not isinstance(cur, dict) or not isinstance(cur.get(key), dict):
            return False
        parents.append(cur)
        cur = cur[key]
    if not isinstance(cur, dict) or path[-1] not in cur:
        return False
    del cur[path[-1]]
    # prune objects the removal left empty ({"audio": {"output": {}}} -> {})
    for parent, key in zip(reversed(parents), reversed(path[:-1]), strict=True):
        if parent[key] == {}:
            del parent[key]
    return True


def only_allowed(patch: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """The fields of ``patch`` named in ``allowed`` (``browserOverrides`` names), nothing else."""
    out: dict[str, Any] = {}
    for name in allowed:
        if name == "model":
            continue
        found, value = _get(patch, path_of(name))
        if found:
            _put(out, path_of(name), value)
    return out


def without_locked(patch: Mapping[str, Any], allowed: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """``patch`` without ``model`` and without the :data:`LOCKED` fields not in ``allowed``; also the names dropped."""
    out = copy.deepcopy(dict(patch))
    allowed_set = set(allowed)
    dropped = ["model"] if _drop(out, ("model",)) else []
    for name in LOCKED:
        if name not in allowed_set and _drop(out, path_of(name)):
            dropped.append(name)
    return out, dropped


def server_session(cfg: OpenAIRealtimeConfig) -> dict[str, Any]:
    """The session the configuration describes: model, instructions, voice."""
    return {"type": "realtime", "model": cfg.model, "instructions": cfg.instructions,
            "audio": {"output": {"voice": cfg.voice}}}


def clean_session(session: Mapping[str, Any]) -> dict[str, Any]:
    """A session *answer* (from a client secret) turned back into a valid *request*: only request fields, no nulls
    at the top level."""
    return {k: copy.deepcopy(v) for k, v in session.items() if k in SESSION_KEYS and v is not None}


def mint_session(cfg: OpenAIRealtimeConfig, patch: Mapping[str, Any] | None, *, trusted: bool) -> dict[str, Any]:
    """The ``session`` of a client-secret request: the configuration, then the client's fields (all of them for a
    trusted client, only ``browserOverrides`` for a browser), with the configured model forced.

    A trusted client's ``type: transcription`` session is passed through unchanged (it has no model)."""
    patch = dict(patch or {})
    if trusted and patch.get("type") == "transcription":
        return copy.deepcopy(patch)
    if not trusted:
        patch = only_allowed(patch, cfg.browser_overrides)
    session = deep_merge(server_session(cfg), patch)
    session["type"] = "realtime"
    session["model"] = cfg.model
    return session


def call_session(cfg: OpenAIRealtimeConfig, secret_session: Mapping[str, Any] | None,
                 client_session: Mapping[str, Any] | None, *, trusted: bool) -> dict[str, Any]:
    """The ``session`` part sent upstream with a WebRTC offer.

    With a client secret: the secret's session, plus the client's multipart ``session`` without locked fields.
    Without: as :func:`mint_session`.
    """
    if secret_session is not None:
        base = clean_session(secret_session)
        if client_session:
            extra, _ = without_locked(client_session, cfg.browser_overrides)
            base = deep_merge(base, extra)
        base["type"] = "realtime"
        base["model"] = cfg.model
        return base
    return mint_session(cfg, client_session, trusted=trusted)


def initial_update(cfg: OpenAIRealtimeConfig, secret_session: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``session`` of the ``session.update`` the relay sends upstream first: the secret's session when the
    client came with one, else the configuration (never ``model``: that is in the URL)."""
    session = clean_session(secret_session) if secret_session is not None else server_session(cfg)
    session.pop("model", None)
    session["type"] = "realtime"
    return session


def _has_system_message(items: Any) -> bool:
    return isinstance(items, list) and any(isinstance(i, Mapping) and i.get("role") == "system" for i in items)


def restrict_client_event(event: dict[str, Any], allowed: Iterable[str]) -> tuple[dict[str, Any] | None, list[str],
                                                                                   str | None]:
    """Apply the browser policy to one client event.

    Returns ``(event to forward or None, names of the fields dropped, refusal message or None)``: ``session.update``
    and ``response.create`` lose the locked fields; a ``system`` message (``conversation.item.create``, or in
    ``response.input``) is refused while ``instructions`` is locked.
    """
    allowed_set = set(allowed)
    etype = event.get("type")
    if etype == "session.update" and isinstance(event.get("session"), Mapping):
        session, dropped = without_locked(event["session"], allowed_set)
        if dropped:
            event = {**event, "session": session}
        return event, dropped, None
    if etype == "conversation.item.create" and "instructions" not in allowed_set:
        item = event.get("item")
        if isinstance(item, Mapping) and item.get("role") == "system":
            return None, [], "System messages are reserved for this server; send 'user' messages."
        return event, [], None
    if etype == "response.create" and isinstance(event.get("response"), Mapping):
        response, dropped = without_locked(event["response"], allowed_set)
        if "model" in dropped:
            dropped.remove("model")
        if "instructions" not in allowed_set and _has_system_message(response.get("input")):
            return None, dropped, "System messages are reserved for this server; send 'user' messages."
        if dropped:
            event = {**event, "response": response}
        return event, dropped, None
    return event, [], None
