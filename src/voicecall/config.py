"""Configuration: a YAML file plus environment variables, validated with clear messages.

The file accepts the shape users already have::

    plugins:
      voice-call:
        provider: openai-realtime          # or: local (the default)
        openaiRealtime: {apiKey: sk-..., model: gpt-realtime, voice: marin, instructions: "..."}
        local: {...}                       # the local engine's stages, see LocalConfig

and the server-wide sections ``server``, ``webrtc`` and ``store`` at the top level. Every key is documented
in ``docs/configuration.md``; keep the two in step. YAML keys are camelCase; Python attributes snake_case.

Environment variables (they win over the file):
``OPENAI_API_KEY`` (``openaiRealtime.apiKey``), ``VOICECALL_PROVIDER``, ``VOICECALL_HOST``, ``VOICECALL_PORT``,
``VOICECALL_API_KEYS`` (comma separated), ``VOICECALL_ALLOWED_ORIGINS`` (comma separated), ``VOICECALL_STORE_URL``,
``VOICECALL_LLM_BASE_URL`` (switches the LLM to ``openai-compatible``), ``VOICECALL_WEBRTC_HOST_ADDRESSES`` (comma
separated), ``VOICECALL_SECRET_KEY``, ``VOICECALL_PREVIOUS_SECRET_KEYS``,
``VOICECALL_STATE_URL``, ``VOICECALL_REPLICA_ID``, ``VOICECALL_INTERNAL_URL``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel


class ConfigError(ValueError):
    """Invalid configuration; the message says which key and why."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ----------------------------------------------------------------------------------------- server
class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    """When set, clients must present one of these (Bearer header or ``openai-insecure-api-key.`` subprotocol)."""
    max_sessions: int = Field(32, ge=1)
    """Concurrent realtime sessions (WebSocket + WebRTC + relayed) this process accepts."""
    max_session_seconds: float = Field(3600.0, gt=0)
    """A session is closed after this long (OpenAI's own limit is 60 minutes)."""
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest accepted client WebSocket message / data-channel message (OpenAI accepts 15 MiB appends)."""
    client_secret_ttl_seconds: int = Field(600, ge=10, le=7200)
    """Default lifetime of ``ek_`` client secrets minted by this server."""
    mint_rate_per_minute: int = Field(30, ge=1)
    """Client secrets (``/session``, ``/v1/realtime/client_secrets``) one client address may mint per minute."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    allowed_origins: list[str] | None = None
    """Browser origins that may use this server: CORS on every HTTP route (preflight included) and the ``Origin``
    check of WebSocket upgrades. Exact origins (``https://app.example.com``), wildcards (``https://*.example.com``)
    or ``"*"`` (any page). Not set: the server's own origin and loopback origins. The server's own origin (the
    page at ``/``) is always allowed. Clients that send no ``Origin`` (not browsers) are judged by their key."""
    beta_protocol: Literal["translate", "refuse"] = "translate"
    """Clients asking for the beta Realtime protocol (``OpenAI-Beta: realtime=v1`` or the
    ``openai-beta.realtime-v1`` subprotocol): ``translate`` serves them beta names both ways (local engine and
    gateway); ``refuse`` answers as OpenAI does since 2026 (``error`` ``beta_api_shape_disabled``, close 4000)."""
    allowed_hosts: list[str] | None = None
    """Host names this server answers to (``Host`` header; others get 403: DNS rebinding). ``*.example.com`` or
    ``.example.com`` for subdomains, ``"*"`` for any. Not set: loopback names, ``server.host`` and this machine's
    name. IP addresses are always accepted."""
    tls_cert_file: str | None = None
    """PEM certificate (chain): serve https:// and wss:// directly, without a TLS proxy in front (some clients,
    such as openai-node 7, only connect over wss://). Needs ``tlsKeyFile``."""
    tls_key_file: str | None = None
    """PEM private key of ``tlsCertFile``."""
    secret_key: SecretStr | None = None
    """Signs the ``ek_`` client secrets this server mints (HMAC-SHA256), so any replica sharing the key verifies
    them. Unset: a random key per process (secrets valid on that process only). Env: ``VOICECALL_SECRET_KEY``."""
    previous_secret_keys: list[SecretStr] = Field(default_factory=list)
    """Keys that still *verify* secrets after a rotation (the grace period lasts as long as they are listed;
    secrets live at most 2 h). Env: ``VOICECALL_PREVIOUS_SECRET_KEYS`` (comma separated)."""
    drain_seconds: float = Field(30.0, ge=0)
    """On SIGTERM: refuse new sessions (``/readyz`` answers 503), let live ones finish for up to this long, then
    close them with a reason."""
    replica_id: str | None = None
    """This replica's name in the shared state (default: hostname and port). Env: ``VOICECALL_REPLICA_ID``."""
    internal_url: str | None = None
    """Where other replicas reach this one to forward a request for a call it owns (default:
    ``http://<host>:<port>``). Env: ``VOICECALL_INTERNAL_URL``."""
    max_outgoing_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    """Bytes of events one connection may have waiting for a slow client (WebSocket queue, data-channel buffer).
    Past half of it answer-audio deltas are dropped; past all of it the connection is closed (1008)."""
    send_timeout_seconds: float = Field(30.0, gt=0)
    """A client that takes no data for this long while the server has some to send is closed (1008)."""
    first_event_seconds: float = Field(30.0, gt=0)
    """A WebSocket that sends no event this long after its handshake is closed (1008)."""
    idle_session_seconds: float = Field(600.0, gt=0)
    """A session with no client event and no audio for this long is closed (1008, ``idle timeout``)."""
    header_timeout_seconds: float = Field(10.0, gt=0)
    """Time a connection has to send the headers of a request (from connect, or from the first byte of the next
    request on a kept-alive connection); slower connections are dropped."""
    body_timeout_seconds: float = Field(30.0, gt=0)
    """Time a request has to send its whole body once its headers arrived; slower requests get 408."""
    keep_alive_seconds: float = Field(5.0, gt=0)
    """An idle kept-alive HTTP connection is closed after this long."""
    max_connections: int = Field(1000, ge=1)
    """Open HTTP connections + WebSockets this process serves at once; more get HTTP 503."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses (or CIDR networks) of reverse proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are
    believed; empty (the default): the address of the TCP peer is the client's, whatever headers say."""
    max_input_audio_seconds: float = Field(300.0, gt=0)
    """Uncommitted input audio a session may buffer; appends past it get ``input_audio_buffer_full``."""
    max_conversation_items: int = Field(2000, ge=10)
    """Items one session's conversation may hold; ``conversation.item.create`` past it gets ``conversation_full``,
    and turns the server adds past it drop the oldest items."""
    max_conversation_audio_seconds: float = Field(1800.0, gt=0)
    """Audio a session's conversation keeps in memory (for ``conversation.item.retrieve``); past it the audio of
    the oldest items is dropped (their transcripts stay)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, or '*' "
                                 "for any)") from None
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str] | None) -> list[str] | None:
        from voicecall.server.origins import normalize_origin

        for entry in v or ():
            e = entry.strip()
            if e != "*" and normalize_origin(e.replace("*", "wildcard")) is None:
                raise ValueError(f"{entry!r} is not an origin: write scheme://host[:port] (no path), e.g. "
                                 "https://app.example.com, https://*.example.com, or '*'")
        return v


class StateConfig(_Model):
    url: str = "memory"
    """``memory`` (this process only, the default) or ``redis://host:6379/0``: limits, client secrets minted by
    OpenAI and WebRTC call owners shared by every replica. Env: ``VOICECALL_STATE_URL``."""
    max_sessions: int | None = Field(None, ge=1)
    """Concurrent sessions across all replicas (``server.maxSessions`` still caps each one)."""
    max_sessions_per_client: int | None = Field(None, ge=1)
    """Concurrent sessions per client (API key, or address for anonymous clients), across replicas."""
    max_spend_per_client_per_day_usd: float | None = Field(None, gt=0)
    """Estimated spend per client per UTC day, across replicas (gateway; fails closed without Redis)."""
    fail_open: bool = True
    """When Redis is unreachable: true lets sessions start and secrets be minted (per-process limits still hold);
    false refuses them. Spend limits always fail closed."""
    lease_seconds: float = Field(30.0, ge=3, le=3600)
    """A session's slot is refreshed every third of this; a replica that dies frees its slots after this long."""
    key_prefix: str = "voicecall:"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v not in ("memory", "memory://") and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("state.url must be 'memory' or a redis:// URL")
        return v


class IceServer(_Model):
    urls: list[str] | str
    username: str | None = None
    credential: SecretStr | None = None


class WebRTCConfig(_Model):
    host_addresses: list[str] = Field(default_factory=list)
    """Addresses to advertise as ICE host candidates (empty: every interface). Tests pin ``[127.0.0.1]``."""
    ice_servers: list[IceServer] = Field(default_factory=list)
    """STUN/TURN servers, for deployments behind NAT."""
    jitter_buffer_frames: int = Field(0, ge=0, le=16)
    """Later 20 ms microphone frames the receive jitter buffer waits for before decoding a frame (aiortc's own
    default: 4, i.e. 80 ms more before the VAD hears speech start or end); 0: a packet in order is decoded as soon
    as it arrives. Reordering is handled either way: a gap is waited for."""


class StoreConfig(_Model):
    url: str = "sqlite:///./voicecall.db"
    """``sqlite:///path/to/file.db`` (default), or ``postgresql://user:pass@host/db``; ``none`` disables history."""
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per-model price overrides in USD per 1M tokens: keys text_in, text_cached, text_out, audio_in, audio_cached,
    audio_out, image_in, image_cached."""


# ---------------------------------------------------------------------------------- provider: local
class StageConfig(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    type: str
    """Adapter name (see ``voicecall.speech.registry``). Other keys are the adapter's options."""

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LocalConfig(_Model):
    vad: StageConfig = Field(default_factory=lambda: StageConfig(type="silero"))
    stt: StageConfig = Field(default_factory=lambda: StageConfig(type="whisper"))
    llm: StageConfig = Field(default_factory=lambda: StageConfig(type="llama-cpp"))
    tts: StageConfig = Field(default_factory=lambda: StageConfig(type="piper"))
    eot: StageConfig = Field(default_factory=lambda: StageConfig(type="smart-turn"))
    """semantic_vad's end-of-turn model: ``smart-turn`` (Smart Turn v3.2 from the pipecat-ai wheel) or ``fixed``."""
    model: str = "voicecall-local"
    """Model name reported in ``session.created`` (clients may ask for any ``?model=``)."""
    voice: str = "marin"
    instructions: str = (
        "You are a helpful voice assistant. Answer in one or two short sentences, in plain words, "
        "without lists or markdown."
    )
    voice_map: dict[str, str] = Field(default_factory=dict)
    """OpenAI voice name -> local voice name overrides (defaults in ``voicecall.speech.voices``)."""
    input_transcription: bool = True
    """Enable input transcription events by default (clients can turn them off with ``session.update``)."""
    silence_duration_ms: int = Field(350, ge=100, le=5000)
    """Default ``server_vad.silence_duration_ms``. 350 ms: OpenAI's servers answer after 200 ms (which cuts people
    off at short pauses), its docs say 500. Measured voice-to-voice p50 with the embedded stack: 400 ms -> ~755 ms,
    350 ms -> ~720-740 ms, 300 ms -> ~735 ms (too little head start for the speculative answer). See
    docs/benchmarks.md."""
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    speculative: bool = True
    """Start answering at the first 150 ms pause, from the partial transcript, and release the answer at the
    end-of-turn decision if the final transcript matches (else answer afresh). Cuts the wait after the
    decision to about the STT's final pass; costs wasted compute when the user goes on talking."""
    false_interruptions: bool = True
    """Speech while the answer is audible pauses it instead of cancelling it; it is cancelled only once words
    show a real interruption (not noise, not a backchannel like "mm-hm", "yeah", "okay"), else it resumes. See
    docs/turns.md. Off: any detected speech interrupts at once, as OpenAI's server does."""
    max_backchannel_ms: int = Field(1000, ge=200, le=5000)
    """Speech during an answer that lasts longer than this is an interruption, whatever its words."""
    preload: bool = True
    """Load every model at start-up (with progress) instead of at the first session."""
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Pipeline price overrides by billing key (``deepgram/nova-3``): ``perMinute`` (audio minutes), ``per1kChars``
    (TTS text), ``inputPerMTok`` / ``outputPerMTok`` (LLM tokens), USD. Defaults: ``voicecall.speech.prices``."""


# ------------------------------------------------------------------------- provider: openai-realtime
GA_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
NON_REALTIME_VOICES = {"fable": "sage", "onyx": "ash", "nova": "coral"}
"""OpenAI's TTS-only voices and the nearest realtime voice (seed-era configurations name them)."""


def seed_era_model(name: str) -> str | None:
    """The current model for a beta-era realtime model name (``gpt-4o-realtime``, ``gpt-4o-realtime-preview-*``,
    ``gpt-4o-mini-realtime-preview-*``), else ``None``."""
    if name.startswith("gpt-4o-mini-realtime"):
        return "gpt-realtime-mini"
    if name == "gpt-4o-realtime" or name.startswith("gpt-4o-realtime-"):
        return "gpt-realtime"
    return None


def _seed_era(info: ValidationInfo, key: str, old: str, new: str, why: str) -> str:
    """Map a seed-era value to its current one with one start-up warning, or refuse it under ``--strict-config``
    (``context={"strict": True}``)."""
    context = info.context if isinstance(info.context, dict) else {}
    if context.get("strict"):
        raise ValueError(f"{key} {old!r} {why}; use {new!r}")
    message = (f"plugins.voice-call.openaiRealtime.{key}: {old!r} {why}; using {new!r} instead "
               f"(set {key}: {new} to silence this warning, or start with --strict-config to refuse it)")
    warnings = context.get("warnings")
    if isinstance(warnings, list):
        warnings.append(message)
    else:
        logging.getLogger("voicecall.config").warning("%s", message)
    return new


class OpenAIRealtimeConfig(_Model):
    api_key: SecretStr | None = None
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = "You are a helpful, friendly voice assistant. Keep answers short."
    base_url: str = "https://api.openai.com/v1"
    browser_overrides: list[str] = Field(default_factory=lambda: ["voice"])
    """Session fields a browser may set when it asks ``POST /session`` (``voice``, ``instructions``, ...)."""
    max_spend_usd: float | None = Field(None, gt=0)
    """Hang up a call (sideband) once its estimated cost passes this."""
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    """Longest wait for an upstream HTTP answer (``POST /session``, client secrets, calls, hangup) and for the
    upstream WebSocket handshake; then the client gets 504 / ``upstream_timeout``."""
    response_stall_seconds: float = Field(30.0, gt=0)
    """A relayed response (or a ``response.create`` / ``input_audio_buffer.commit`` upstream never answers) with
    no upstream event for this long is failed: ``error`` ``upstream_timeout`` to the client, ``response.cancel``
    upstream, status ``failed`` in history."""

    @field_validator("model")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        current = seed_era_model(v)
        if current is not None:
            return _seed_era(info, "model", v, current, "is a beta-era model name (OpenAI turned the beta Realtime "
                             "API off in 2026)")
        return v

    @field_validator("voice")
    @classmethod
    def _voice(cls, v: str, info: ValidationInfo) -> str:
        if v in NON_REALTIME_VOICES:
            return _seed_era(info, "voice", v, NON_REALTIME_VOICES[v], "exists only for OpenAI's TTS models, not for "
                             "realtime models; its nearest realtime voice is")
        if v not in GA_VOICES:
            raise ValueError(f"unknown realtime voice {v!r}; use one of: {', '.join(GA_VOICES)}")
        return v

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("baseUrl must start with http:// or https://")
        return v.rstrip("/")


class VoiceCallConfig(_Model):
    provider: Literal["local", "openai-realtime"] = "local"
    openai_realtime: OpenAIRealtimeConfig = Field(default_factory=OpenAIRealtimeConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)


class PluginsConfig(_Model):
    voice_call: VoiceCallConfig = Field(default_factory=VoiceCallConfig, alias="voice-call")


class Config(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What :func:`load_config` mapped from seed-era values (beta-era model names, TTS-only voices): one
        start-up warning each (``voicecall serve`` logs them)."""
        return self._warnings

    @property
    def voice_call(self) -> VoiceCallConfig:
        return self.plugins.voice_call

    @model_validator(mode="after")
    def _needs_key(self) -> Config:
        vc = self.plugins.voice_call
        key = vc.openai_realtime.api_key
        if vc.provider == "openai-realtime" and (key is None or not key.get_secret_value()):
            raise ValueError(
                "provider 'openai-realtime' needs an API key: set plugins.voice-call.openaiRealtime.apiKey "
                "or the OPENAI_API_KEY environment variable"
            )
        if bool(self.server.tls_cert_file) != bool(self.server.tls_key_file):
            raise ValueError("server.tlsCertFile and server.tlsKeyFile go together: set both (or neither)")
        for f in (self.server.tls_cert_file, self.server.tls_key_file):
            if f and not Path(f).is_file():
                raise ValueError(f"TLS file not found: {f}")
        if self.state.url not in ("memory", "memory://") and self.server.secret_key is None:
            raise ValueError(
                "state.url points at a shared store (several replicas): set server.secretKey (or "
                "VOICECALL_SECRET_KEY) to the same value on every replica so that each verifies the others' client "
                "secrets"
            )
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _set(d: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        nxt = d.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            d[key] = nxt
        d = nxt
    d[path[-1]] = value


def _apply_env(raw: dict[str, Any], env: dict[str, str]) -> None:
    vc = ["plugins", "voice-call"]
    if env.get("OPENAI_API_KEY"):
        cur = raw.get("plugins", {}).get("voice-call", {}).get("openaiRealtime", {}) or {}
        if not cur.get("apiKey"):
            _set(raw, [*vc, "openaiRealtime", "apiKey"], env["OPENAI_API_KEY"])
    if env.get("VOICECALL_PROVIDER"):
        _set(raw, [*vc, "provider"], env["VOICECALL_PROVIDER"])
    if env.get("VOICECALL_HOST"):
        _set(raw, ["server", "host"], env["VOICECALL_HOST"])
    if env.get("VOICECALL_PORT"):
        _set(raw, ["server", "port"], env["VOICECALL_PORT"])
    if env.get("VOICECALL_ALLOWED_ORIGINS"):
        origins = [o.strip() for o in env["VOICECALL_ALLOWED_ORIGINS"].split(",") if o.strip()]
        _set(raw, ["server", "allowedOrigins"], origins)
    if env.get("VOICECALL_API_KEYS"):
        _set(raw, ["server", "apiKeys"], [k.strip() for k in env["VOICECALL_API_KEYS"].split(",") if k.strip()])
    if env.get("VOICECALL_STORE_URL"):
        _set(raw, ["store", "url"], env["VOICECALL_STORE_URL"])
    if env.get("VOICECALL_WEBRTC_HOST_ADDRESSES"):
        addresses = [a.strip() for a in env["VOICECALL_WEBRTC_HOST_ADDRESSES"].split(",") if a.strip()]
        _set(raw, ["webrtc", "hostAddresses"], addresses)
    if env.get("VOICECALL_SECRET_KEY"):
        _set(raw, ["server", "secretKey"], env["VOICECALL_SECRET_KEY"])
    if env.get("VOICECALL_PREVIOUS_SECRET_KEYS"):
        keys = [k.strip() for k in env["VOICECALL_PREVIOUS_SECRET_KEYS"].split(",") if k.strip()]
        _set(raw, ["server", "previousSecretKeys"], keys)
    if env.get("VOICECALL_REPLICA_ID"):
        _set(raw, ["server", "replicaId"], env["VOICECALL_REPLICA_ID"])
    if env.get("VOICECALL_INTERNAL_URL"):
        _set(raw, ["server", "internalUrl"], env["VOICECALL_INTERNAL_URL"])
    if env.get("VOICECALL_STATE_URL"):
        _set(raw, ["state", "url"], env["VOICECALL_STATE_URL"])
    if env.get("VOICECALL_LLM_BASE_URL"):
        _set(raw, [*vc, "local", "llm"], {"type": "openai-compatible", "baseUrl": env["VOICECALL_LLM_BASE_URL"]})


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None, strict: bool = False) -> Config:
    """Read ``path`` (or ``$VOICECALL_CONFIG``; none = defaults), apply the environment, validate.

    Seed-era values (``openaiRealtime.model: gpt-4o-realtime…``, ``voice: fable|onyx|nova``) are mapped to their
    current ones and listed in :attr:`Config.warnings`; ``strict`` refuses them instead."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("VOICECALL_CONFIG") or None
    raw: dict[str, Any] = {}
    source = "defaults"
    if path:
        p = Path(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {p}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
        raw = loaded
        # Accept a bare `voice-call:` block at the top level too.
        if "voice-call" in raw:
            raw.setdefault("plugins", {})["voice-call"] = raw.pop("voice-call")
    _apply_env(raw, env)
    for dotted, value in (overrides or {}).items():
        _set(raw, dotted.split("."), value)
    warnings: list[str] = []
    try:
        config = Config.model_validate(raw, context={"strict": strict, "warnings": warnings})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    config._warnings = warnings
    return config
