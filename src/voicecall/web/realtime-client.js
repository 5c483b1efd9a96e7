// realtime-client.js: a small, dependency-free browser client for the OpenAI Realtime GA protocol over
// WebRTC or a WebSocket, as served by voicecall (and by api.openai.com behind a /session endpoint of your own).
//
//   import { RealtimeClient, OpenAIRealtime } from "/realtime-client.js";
//   const client = new RealtimeClient({ voice: "marin", onTranscript: (text, isFinal, role, itemId) => ... });
//   await client.connect();          // POST /session, getUserMedia, SDP exchange, data channel "oai-events"
//   client.stopRecording();          // mute the microphone track
//   client.interrupt();              // response.cancel + output_audio_buffer.clear
//   await client.disconnect();       // hang up
//
//   // The same over a WebSocket (transport: "websocket"), with the seed-era API and defaults:
//   const rt = new OpenAIRealtime({ model, voice, instructions, onTranscript(text, isFinal) {}, onAudioChunk(b64) {} });
//   await rt.connect();              // POST /session (an ek_ secret), then GET /v1/realtime?model=... (WebSocket)
//   await rt.startRecording();       // microphone -> AudioWorklet -> PCM16 24 kHz -> input_audio_buffer.append
//   rt.stopRecording(); rt.disconnect();
//
// No build step, no dependencies. See docs/web-client.md for the full reference.

import { PCM_RATE, PcmAudio, base64FromPcm16, pcm16FromBase64 } from "./pcm-audio.js";

/** GA voices accepted by OpenAI realtime models (voicecall's local engine accepts them too). */
export const GA_VOICES = Object.freeze([
  "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
]);

/** Client states reported through onStateChange. */
export const STATES = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  DISCONNECTED: "disconnected",
  ERROR: "error",
});

const DEFAULT_AUDIO_CONSTRAINTS = Object.freeze({
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
});

/** An Error carrying the HTTP status and the OpenAI-style error `type`/`code` when there are any. */
export class RealtimeError extends Error {
  constructor(message, { status = null, type = null, code = null, cause = undefined, event = null } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "RealtimeError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.event = event;
  }
}

/**
 * Cost in USD of one `response.done.response.usage` block, given prices in USD per 1M tokens
 * (`{text_in, text_cached, text_out, audio_in, audio_cached, audio_out, image_in?, image_cached?}`).
 * Cached tokens are a subset of the input tokens, so they are billed at the cached price and the rest at the
 * full input price.
 */
export function costOfUsage(usage, pricing) {
  if (!usage || !pricing) return 0;
  const n = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const p = (k) => n(pricing[k]);
  const inD = usage.input_token_details || {};
  const cached = inD.cached_tokens_details || {};
  const outD = usage.output_token_details || {};
  const inText = n(inD.text_tokens), inAudio = n(inD.audio_tokens), inImage = n(inD.image_tokens);
  const cText = Math.min(n(cached.text_tokens), inText);
  const cAudio = Math.min(n(cached.audio_tokens), inAudio);
  const cImage = Math.min(n(cached.image_tokens), inImage);
  const usd =
    (inText - cText) * p("text_in") + cText * p("text_cached") +
    (inAudio - cAudio) * p("audio_in") + cAudio * p("audio_cached") +
    (inImage - cImage) * p("image_in") + cImage * p("image_cached") +
    n(outD.text_tokens) * p("text_out") + n(outD.audio_tokens) * p("audio_out");
  return usd / 1e6;
}

/** Median of a list of numbers (null for an empty list). */
export function median(values) {
  if (!values || values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function randomId(prefix) {
  const c = globalThis.crypto;
  const raw = c && typeof c.randomUUID === "function"
    ? c.randomUUID().replace(/-/g, "")
    : Array.from({ length: 24 }, () => Math.floor(Math.random() * 36).toString(36)).join("");
  return `${prefix}${raw.slice(0, 24)}`;
}

function joinUrl(base, path) {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path)) return path; // already absolute
  if (!base) return path;
  return base.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`);
}

/** A RealtimeError for a WebSocket close event (code and reason; 1006 = refused before the handshake ended). */
function wsCloseError(e, what) {
  const hint = e.code === 1006 ? " (the handshake failed: wrong address, origin not allowed, or server down)" : "";
  const err = new RealtimeError(`${what}: code ${e.code}${e.reason ? ` (${e.reason})` : ""}${hint}.`,
    { code: e.code === 4001 ? "invalid_api_key" : "websocket_closed" });
  err.closeCode = e.code;
  return err;
}

function isAbort(err) {
  return err && (err.name === "AbortError" || err.code === "aborted");
}

function abortError() {
  const e = new RealtimeError("Connection attempt cancelled", { code: "aborted" });
  e.name = "AbortError";
  return e;
}

/** Build a RealtimeError from a failed fetch Response whose body is `{"error": {message, type, code}}`. */
export async function errorFromResponse(res, what) {
  let message = null, type = null, code = null;
  let text = "";
  try { text = await res.text(); } catch { /* ignore */ }
  try {
    const body = JSON.parse(text);
    const e = body && (body.error || body.detail || body);
    if (e && typeof e === "object") {
      message = e.message || null;
      type = e.type || null;
      code = e.code || null;
    } else if (typeof e === "string") {
      message = e;
    }
  } catch {
    if (text && text.length < 300 && !/^\s*</.test(text)) message = text.trim();
  }
  if (!message) message = `${what} failed (HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""})`;
  return new RealtimeError(message, { status: res.status, type, code });
}

function micErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was blocked. Allow microphone access for this site in your browser settings, then try again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in (or pick one in your system settings) and try again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened; another application may be using it.";
    default:
      return `Could not open the microphone: ${(err && err.message) || err}`;
  }
}

function rms(analyser, buf) {
  if (!analyser) return 0;
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
  return Math.sqrt(sum / buf.length);
}

const noop = () => {};

/** WebSocket close codes after which reconnecting cannot help (bad credentials, refused origin, refused protocol). */
const FATAL_CLOSE_CODES = new Set([1008, 4000, 4001, 4003]);

/** ws:// or wss:// URL of `path` on `base` (or on this page's origin when `base` is empty). */
function wsUrl(base, path, params) {
  const url = new URL(joinUrl(base, path), globalThis.location ? globalThis.location.href : undefined);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") url.searchParams.set(k, v);
  return url.toString();
}

/**
 * A realtime voice session over WebRTC (default) or a WebSocket (`transport: "websocket"`).
 *
 * Options (all optional):
 *  - transport: "webrtc" (audio as RTP, events on a data channel) or "websocket" (events and base64 PCM16 24 kHz
 *    audio on one WebSocket to `{baseUrl}{wsPath}?model=...`, authenticated with the ek_ secret as the
 *    `openai-insecure-api-key.<secret>` subprotocol; the microphone goes through an AudioWorklet).
 *  - model: asked for in the WebSocket URL (`?model=`); wsPath ("/v1/realtime"; seed-era proxies: "/api/realtime").
 *  - recording (true): whether the microphone is live after connect(). False: connect() does not open the
 *    microphone; startRecording() does.
 *  - playAudio (true, WebSocket): play the assistant's audio (gapless); onAudioChunk(base64, event) gets every chunk.
 *  - voice, instructions: sent to `POST {baseUrl}{sessionPath}` as `{voice, instructions}`.
 *  - baseUrl ("" = same origin), sessionPath ("/session").
 *  - apiKey: string or (async) function returning one; sent as `Authorization: Bearer` on the session request.
 *  - sessionBody: extra JSON fields merged into the session request body.
 *  - getClientSecret: (async) function returning an ek_ client secret (a string, or the JSON of
 *    POST /v1/realtime/client_secrets) minted by your own backend; replaces the session request (for a page on
 *    another site whose backend holds the voicecall API key).
 *  - audioConstraints: getUserMedia audio constraints (default echoCancellation/noiseSuppression/autoGainControl true).
 *  - mediaStream: use this MediaStream as the microphone instead of calling getUserMedia.
 *  - audioElement: the <audio> element that plays the assistant (default: a hidden one appended to <body>).
 *  - autoReconnect (true), maxReconnectAttempts (3), reconnectDelayMs (1000, doubled each attempt),
 *    disconnectGraceMs (5000: how long the peer connection may stay "disconnected" before it counts as dropped),
 *    connectTimeoutMs (20000).
 *  - levelIntervalMs (10): how often levels are sampled and onLevels is called.
 *  - speechThresholds ({mic: 0.02, remote: 0.01}): RMS levels that count as speech for the latency measurement.
 *  - Callbacks: onTranscript(text, isFinal, role, itemId), onEvent(serverEvent), onError(err),
 *    onStateChange(state, detail), onLevels({mic, remote, time}), onLatency(ms, detail), onSend(clientEvent).
 */
export class RealtimeClient {
  constructor(options = {}) {
    const o = options;
    if (o.transport && o.transport !== "webrtc" && o.transport !== "websocket") {
      throw new RealtimeError(`Unknown transport ${JSON.stringify(o.transport)}: use "webrtc" or "websocket".`);
    }
    /** "webrtc" or "websocket"; may be changed between calls. */
    this.transport = o.transport ?? "webrtc";
    this.requestedModel = o.model ?? null;
    this.wsPath = o.wsPath ?? "/v1/realtime";
    this.playAudio = o.playAudio ?? true;
    this.voice = o.voice;
    this.instructions = o.instructions;
    this.baseUrl = o.baseUrl ?? "";
    this.sessionPath = o.sessionPath ?? "/session";
    this.apiKey = o.apiKey ?? null;
    this.sessionBody = o.sessionBody ?? null;
    this.getClientSecret = o.getClientSecret ?? null;
    this.audioConstraints = { ...DEFAULT_AUDIO_CONSTRAINTS, ...(o.audioConstraints || {}) };
    this.externalStream = o.mediaStream ?? null;
    this.audioElement = o.audioElement ?? null;
    this.autoReconnect = o.autoReconnect ?? true;
    this.maxReconnectAttempts = o.maxReconnectAttempts ?? 3;
    this.reconnectDelayMs = o.reconnectDelayMs ?? 1000;
    this.disconnectGraceMs = o.disconnectGraceMs ?? 5000;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 20000;
    this.levelIntervalMs = o.levelIntervalMs ?? 10;
    this.speechThresholds = { mic: 0.02, remote: 0.01, ...(o.speechThresholds || {}) };

    this.onTranscript = o.onTranscript || noop;
    this.onEvent = o.onEvent || noop;
    this.onError = o.onError || noop;
    this.onStateChange = o.onStateChange || noop;
    this.onLevels = o.onLevels || noop;
    this.onLatency = o.onLatency || noop;
    this.onSend = o.onSend || noop;
    this.onAudioChunk = o.onAudioChunk || noop;

    /** Current state, one of STATES. */
    this.state = STATES.IDLE;
    /** Response of the last session request: {value, expires_at, session, provider, model, calls_url, ice_servers, pricing}. */
    this.sessionInfo = null;
    /** The effective GA session (from the session request, then session.created / session.updated). */
    this.session = null;
    this.provider = null;
    this.model = null;
    /** Prices in USD per 1M tokens from the session request (all zeros for the local engine). */
    this.pricing = null;
    /** The WebRTC call id (from the Location header of the SDP answer). */
    this.callId = null;
    this.pc = null;
    this.dc = null;
    /** The WebSocket (transport "websocket"). */
    this.ws = null;
    /** Measured turn latencies in ms (end of user speech as heard by the mic -> first assistant audio). */
    this.latencies = [];
    /** Latest levels (RMS, 0..1). */
    this.levels = { mic: 0, remote: 0 };
    this.activeResponseId = null;

    this._recording = o.recording ?? true;
    this._audio = null;          // PcmAudio (transport "websocket")
    this._capturing = false;     // microphone chunks are being sent (transport "websocket")
    this._appended = 0;          // samples appended since the last commit (transport "websocket")
    this._mutedItems = new Set(); // items whose audio was interrupted: their late deltas are not played
    this._currentAudioItem = null; // item of the last audio delta
    this._micStream = null;
    this._micTrack = null;
    this._remoteStream = null;
    this._ownsAudioElement = false;
    this._ac = null;
    this._micSource = null;
    this._micAnalyser = null;
    this._remoteSource = null;
    this._remoteAnalyser = null;
    this._levelBuf = null;
    this._levelTimer = null;
    this._generation = 0;
    this._abort = null;
    this._intentional = false;
    this._dropTimer = null;
    this._reconnecting = false;
    this._reconnectTimer = null;
    this._reconnectWake = null;
    this._reconnectToken = {};
    this._secret = null;
    this._callsUrl = null;
    this._transcripts = new Map(); // itemId -> {role, parts: Map(contentIndex -> text), final}
    this._lat = { speechStartedAt: null, lastMicLoudAt: null, awaiting: false, turnEnd: 0, since: 0, quietSeen: false, source: null };
  }

  // ------------------------------------------------------------------------------------------ public API

  get isConnected() { return this.state === STATES.CONNECTED && this._channelOpen(); }

  /** True while the microphone track is live (not muted). */
  get isRecording() { return this._recording; }

  /**
   * Connect and start talking. Resolves once the data channel is open. On failure the error is passed to
   * onError AND the promise rejects (callers that use onError can ignore the rejection).
   */
  async connect() {
    if (this.state === STATES.CONNECTING || this.state === STATES.CONNECTED) return;
    this._cancelReconnect();
    this._intentional = false;
    this._ensureAudioContext(); // synchronously, inside the user gesture that called connect()
    try {
      await this._connectOnce(false);
    } catch (err) {
      if (isAbort(err)) return; // disconnect() during connect: not an error
      this._teardownPeer();
      this._stopMic();
      this._setState(STATES.ERROR, { error: err });
      this._emitError(err);
      throw err;
    }
  }

  /** Hang up (best effort), close the data channel and the peer connection, stop the microphone. */
  async disconnect() {
    this._intentional = true;
    this._generation++;
    this._cancelReconnect();
    if (this._abort) this._abort.abort();
    const hangup = this._hangup();
    this._teardownPeer();
    this._stopMic();
    if (this.state !== STATES.IDLE) this._setState(STATES.DISCONNECTED, { reason: "client" });
    try { await hangup; } catch { /* best effort */ }
  }

  /**
   * Unmute the microphone. Over a WebSocket this opens the microphone first when connect() did not
   * (`recording: false`), and resolves once its audio flows; errors go to onError and reject.
   */
  async startRecording() {
    this._recording = true;
    if (this._micTrack) this._micTrack.enabled = true;
    if (this.transport !== "websocket" || !this.isConnected || this._capturing) return;
    const gen = this._generation;
    try {
      await this._openMic(gen);
      if (gen !== this._generation || !this._recording) return;
      this._startCapture();
    } catch (err) {
      if (isAbort(err)) return;
      this._emitError(err);
      throw err;
    }
  }

  /**
   * Mute the microphone. WebRTC: the track is muted (the server receives silence). WebSocket: no more audio is
   * sent; with turn detection off (push-to-talk) the audio sent so far is committed and a response requested.
   */
  stopRecording() {
    this._recording = false;
    if (this._micTrack) this._micTrack.enabled = false;
    if (this.transport !== "websocket") return;
    const td = this.session && this.session.audio && this.session.audio.input
      ? this.session.audio.input.turn_detection : undefined;
    if (td === null && this._appended >= PCM_RATE / 10 && this.isConnected) {
      this.send({ type: "input_audio_buffer.commit" });
      this.send({ type: "response.create" });
    }
    this._appended = 0;
  }

  /** Send a client event on the data channel; adds an `event_id` if missing. Returns the event sent. */
  send(event) {
    if (!event || typeof event !== "object" || !event.type) throw new RealtimeError("send() needs an event object with a type");
    if (!this._channelOpen()) throw new RealtimeError("Not connected", { code: "not_connected" });
    const ev = event.event_id ? event : { event_id: randomId("evt_"), ...event };
    if (this.ws) this.ws.send(JSON.stringify(ev));
    else this.dc.send(JSON.stringify(ev));
    try { this.onSend(ev); } catch (e) { console.error(e); }
    return ev;
  }

  /**
   * Stop the assistant: response.cancel (if a response is in progress), then WebRTC: output_audio_buffer.clear
   * (the server stops the audio and truncates what was not played); WebSocket: local playback stops and
   * conversation.item.truncate tells the server how much was heard.
   */
  interrupt() {
    if (!this.isConnected) return;
    if (this.activeResponseId) this.send({ type: "response.cancel" });
    if (this.transport === "websocket") this._bargeIn();
    else this.send({ type: "output_audio_buffer.clear" });
  }

  /**
   * session.update with a partial GA session (`type: "realtime"` is added). Voice and instructions are also
   * remembered for the next connect() / reconnect. When not connected, only remembers them.
   */
  updateSession(partialSession = {}) {
    if (typeof partialSession.instructions === "string") this.instructions = partialSession.instructions;
    const v = partialSession.audio && partialSession.audio.output && partialSession.audio.output.voice;
    if (v) this.voice = v;
    if (!this.isConnected) return null;
    return this.send({ type: "session.update", session: { type: "realtime", ...partialSession } });
  }

  /** Convenience: add a user text message and ask for a response. */
  sendText(text) {
    this.send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
    this.send({ type: "response.create" });
  }

  // ------------------------------------------------------------------------------------------ connection

  async _connectOnce(isReconnect) {
    const gen = ++this._generation;
    const attempt = { pc: null };
    try {
      await this._connectAttempt(isReconnect, gen, attempt);
    } catch (err) {
      // A superseded attempt must not leak its peer connection (the current one is torn down by the caller).
      if (attempt.pc && attempt.pc !== this.pc) { try { attempt.pc.close(); } catch { /* ignore */ } }
      // Invalidate this attempt so that a getUserMedia() still pending stops its stream when it resolves.
      if (gen === this._generation) this._generation++;
      throw err;
    }
  }

  async _connectAttempt(isReconnect, gen, attempt) {
    const abort = new AbortController();
    this._abort = abort;
    const check = () => { if (gen !== this._generation || abort.signal.aborted) throw abortError(); };
    this._setState(isReconnect ? STATES.RECONNECTING : STATES.CONNECTING);
    this._transcripts.clear();
    this.activeResponseId = null;
    this.callId = null;
    if (this.transport === "websocket") {
      await this._connectWebSocket(gen, abort, check);
      return;
    }

    // 1. Ephemeral secret (+ session, pricing, ICE servers) and the microphone, in parallel.
    const [info, mic] = await Promise.all([this._createSession(abort.signal), this._openMic(gen)]);
    check();
    this._applySessionInfo(info);
    this._callsUrl = joinUrl(this.baseUrl, info.calls_url || "/v1/realtime/calls");

    // 2. Peer connection, mic track, data channel, SDP offer/answer.
    const iceServers = Array.isArray(info.ice_servers) ? info.ice_servers.filter((s) => s && s.urls) : [];
    const pc = new RTCPeerConnection({ iceServers });
    attempt.pc = pc;
    this.pc = pc;
    pc.ontrack = (e) => this._onRemoteTrack(e);
    pc.onconnectionstatechange = () => this._onPcState(pc);
    pc.addTrack(mic, this._micStream);
    const dc = pc.createDataChannel("oai-events");
    dc.binaryType = "arraybuffer";
    this.dc = dc;
    dc.onmessage = (e) => this._onMessage(e.data);
    this._attachMicAnalyser();

    const opened = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new RealtimeError(
        "Timed out while connecting the audio path (ICE/DTLS). A firewall may be blocking WebRTC; the server may need a TURN server.",
        { code: "connect_timeout" })), this.connectTimeoutMs);
      const fail = (msg, code) => { clearTimeout(timer); reject(new RealtimeError(msg, { code })); };
      dc.onopen = () => { clearTimeout(timer); resolve(); };
      dc.onclose = () => fail("The server closed the connection while connecting.", "dc_closed");
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") fail("The WebRTC connection failed (ICE). A firewall may be blocking it; the server may need a TURN server.", "ice_failed");
      });
      abort.signal.addEventListener("abort", () => { clearTimeout(timer); reject(abortError()); });
    });
    opened.catch(() => {}); // handled below; avoid an unhandled rejection while we await the SDP exchange

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    check();
    let res;
    try {
      res = await fetch(this._callsUrl, {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${this._secret}` },
        signal: abort.signal,
      });
    } catch (err) {
      if (isAbort(err)) throw abortError();
      throw new RealtimeError(`Could not reach the server to start the call: ${err.message}`, { code: "network_error", cause: err });
    }
    check();
    if (!res.ok) throw await errorFromResponse(res, "Starting the call");
    const answer = await res.text();
    check();
    const loc = res.headers.get("Location");
    if (loc) this.callId = loc.split("?")[0].replace(/\/+$/, "").split("/").pop() || null;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    check();

    // 3. Wait for the data channel.
    await opened;
    check();
    dc.onclose = () => this._onDrop("The connection to the server was closed.");
    this._abort = null;
    this._setState(STATES.CONNECTED, { callId: this.callId, provider: this.provider, model: this.model });
  }

  async _secretFromApp() {
    let got;
    try { got = await this.getClientSecret(); } catch (err) {
      throw new RealtimeError(`Could not get a client secret: ${(err && err.message) || err}`, { code: "client_secret_failed", cause: err });
    }
    const info = typeof got === "string" ? { value: got } : { ...(got || {}) };
    if (typeof info.value !== "string" || !info.value) {
      throw new RealtimeError("getClientSecret() returned no client secret.", { code: "bad_response" });
    }
    return info;
  }

  _applySessionInfo(info) {
    this.sessionInfo = info;
    this.session = info.session || null;
    this.provider = info.provider || null;
    this.model = info.model || (info.session && info.session.model) || null;
    this.pricing = info.pricing || null;
    this._secret = info.value;
  }

  _channelOpen() {
    if (this.ws) return this.ws.readyState === WebSocket.OPEN;
    return !!this.dc && this.dc.readyState === "open";
  }

  /**
   * The WebSocket transport: ek_ secret (and the microphone, unless `recording` is off) in parallel, then
   * `GET {wsPath}?model=` with the subprotocols ["realtime", "openai-insecure-api-key.<secret>"] (browsers cannot
   * send an Authorization header on a WebSocket; the secret is short-lived and bound to this session's settings).
   */
  async _connectWebSocket(gen, abort, check) {
    const ac = this._ensureAudioContext();
    if (!ac || !ac.audioWorklet) {
      throw new RealtimeError("This browser cannot process audio for the WebSocket transport (no AudioWorklet; " +
        "it needs a secure page: https:// or http://localhost). Use the WebRTC transport.", { code: "unsupported_browser" });
    }
    let audio = null;
    try {
      const [info, , pcm] = await Promise.all([
        this._createSession(abort.signal), this._recording ? this._openMic(gen) : null, PcmAudio.create(ac)]);
      audio = pcm;
      check();
      this._applySessionInfo(info);
    } catch (err) {
      if (audio) audio.close();
      throw err;
    }
    this._audio = audio;
    this._mutedItems = new Set();
    const an = ac.createAnalyser();
    an.fftSize = 512;
    an.smoothingTimeConstant = 0;
    audio.output.connect(an);
    this._remoteAnalyser = an;

    const ws = new WebSocket(wsUrl(this.baseUrl, this.wsPath, { model: this.requestedModel }),
      ["realtime", `openai-insecure-api-key.${this._secret}`]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (e) => this._onMessage(e.data);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new RealtimeError("Timed out while opening the WebSocket.",
        { code: "connect_timeout" })), this.connectTimeoutMs);
      ws.onopen = () => { clearTimeout(timer); resolve(); };
      ws.onclose = (e) => { clearTimeout(timer); reject(wsCloseError(e, "The server refused the WebSocket connection")); };
      abort.signal.addEventListener("abort", () => { clearTimeout(timer); reject(abortError()); });
    });
    check();
    ws.onclose = (e) => this._onWsClose(ws, e);
    if (this._micStream && this._recording) this._startCapture();
    else this._startLevels();
    this._abort = null;
    this._setState(STATES.CONNECTED, { provider: this.provider, model: this.model, transport: "websocket" });
  }

  _onWsClose(ws, e) {
    if (ws !== this.ws || this._intentional) return;
    if (!FATAL_CLOSE_CODES.has(e.code)) {
      this._onDrop(`The connection to the server was closed (code ${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
      return;
    }
    this._teardownPeer();
    this._stopMic();
    const err = wsCloseError(e, "The server closed the connection");
    this._setState(STATES.ERROR, { error: err, reason: err.message });
    this._emitError(err);
  }

  /** Microphone -> AudioWorklet -> input_audio_buffer.append (40 ms chunks of base64 PCM16 24 kHz). */
  _startCapture() {
    if (!this._audio || !this._micStream) return;
    if (!this._micSource) this._attachMicAnalyser();
    if (!this._micSource) return;
    this._audio.startCapture(this._micSource, (buf) => {
      if (!this._recording || !this._channelOpen()) return;
      this._appended += buf.byteLength >> 1;
      // Not reported through onSend (25 a second); no event_id needed.
      this.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64FromPcm16(buf) }));
    });
    this._capturing = true;
  }

  /** Barge-in on a WebSocket: stop playback now and truncate the item at what was heard. */
  async _bargeIn() {
    const audio = this._audio;
    if (!audio) return;
    if (this._currentAudioItem && (this.activeResponseId || audio.playing)) this._mutedItems.add(this._currentAudioItem);
    if (!audio.playing) return;
    const at = await audio.stop();
    if (!at.itemId || at.queued <= 0 || audio !== this._audio || !this.isConnected) return; // everything was heard
    this._mutedItems.add(at.itemId);
    this.send({ type: "conversation.item.truncate", item_id: at.itemId, content_index: at.contentIndex,
      audio_end_ms: Math.floor((at.played * 1000) / PCM_RATE) });
  }

  async _createSession(signal) {
    if (this.getClientSecret) return this._secretFromApp();
    const headers = { "Content-Type": "application/json" };
    const key = typeof this.apiKey === "function" ? await this.apiKey() : this.apiKey;
    if (key) headers.Authorization = `Bearer ${key}`;
    const body = { ...(this.sessionBody || {}) };
    if (this.voice) body.voice = this.voice;
    if (typeof this.instructions === "string") body.instructions = this.instructions;
    let res;
    try {
      res = await fetch(joinUrl(this.baseUrl, this.sessionPath), { method: "POST", headers, body: JSON.stringify(body), signal });
    } catch (err) {
      if (isAbort(err)) throw abortError();
      throw new RealtimeError(`Could not reach the server: ${err.message}`, { code: "network_error", cause: err });
    }
    if (!res.ok) throw await errorFromResponse(res, "Creating the session");
    let info;
    try { info = await res.json(); } catch (err) {
      throw new RealtimeError("The session endpoint did not return JSON.", { status: res.status, code: "bad_response", cause: err });
    }
    if (!info || typeof info.value !== "string" || !info.value) {
      throw new RealtimeError("The session endpoint returned no client secret (\"value\").", { status: res.status, code: "bad_response" });
    }
    return info;
  }

  async _openMic(gen) {
    if (this._micTrack && this._micTrack.readyState === "live") return this._micTrack; // reuse across reconnects
    let stream = this.externalStream;
    if (!stream) {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new RealtimeError("Microphone access needs a secure page: open it over https:// or on http://localhost.", { code: "insecure_context" });
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: this.audioConstraints });
      } catch (err) {
        throw new RealtimeError(micErrorMessage(err), { code: "microphone_error", cause: err });
      }
      if (gen !== this._generation) { // the attempt failed or was cancelled while the browser asked for permission
        for (const t of stream.getTracks()) t.stop();
        throw abortError();
      }
    }
    const track = stream.getAudioTracks()[0];
    if (!track) throw new RealtimeError("The microphone stream has no audio track.", { code: "microphone_error" });
    this._micStream = stream;
    this._micTrack = track;
    track.enabled = this._recording;
    return track;
  }

  _stopMic() {
    if (this._micStream && this._micStream !== this.externalStream) {
      for (const t of this._micStream.getTracks()) t.stop();
    }
    this._micStream = null;
    this._micTrack = null;
  }

  async _hangup() {
    if (!this.callId || !this._callsUrl || !this._secret) return;
    const url = `${this._callsUrl.replace(/\/+$/, "")}/${encodeURIComponent(this.callId)}/hangup`;
    const secret = this._secret;
    this.callId = null;
    await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${secret}` }, keepalive: true });
  }

  _teardownPeer() {
    clearTimeout(this._dropTimer);
    this._dropTimer = null;
    this._stopLevels();
    if (this.dc) {
      this.dc.onmessage = this.dc.onclose = this.dc.onopen = null;
      try { this.dc.close(); } catch { /* ignore */ }
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = null;
      try { this.pc.close(); } catch { /* ignore */ }
    }
    this.dc = null;
    this.pc = null;
    if (this.ws) {
      const ws = this.ws;
      ws.onmessage = ws.onclose = ws.onopen = null;
      try { ws.close(1000); } catch { /* ignore */ }
    }
    this.ws = null;
    if (this._audio) this._audio.close();
    this._audio = null;
    this._capturing = false;
    this._appended = 0;
    this._currentAudioItem = null;
    for (const n of [this._micSource, this._remoteSource]) { try { n && n.disconnect(); } catch { /* ignore */ } }
    this._micSource = this._remoteSource = this._micAnalyser = this._remoteAnalyser = null;
    if (this.audioElement) {
      try { this.audioElement.pause(); } catch { /* ignore */ }
      this.audioElement.srcObject = null;
    }
    this._remoteStream = null;
    this.activeResponseId = null;
    this.levels = { mic: 0, remote: 0 };
    this._lat.awaiting = false;
  }

  _onPcState(pc) {
    if (pc !== this.pc || this.state !== STATES.CONNECTED) return;
    const s = pc.connectionState;
    if (s === "connected") {
      clearTimeout(this._dropTimer);
      this._dropTimer = null;
    } else if (s === "failed") {
      this._onDrop("The network connection to the server failed.");
    } else if (s === "disconnected" && !this._dropTimer) {
      this._dropTimer = setTimeout(() => {
        this._dropTimer = null;
        if (this.pc === pc && pc.connectionState !== "connected") this._onDrop("The network connection to the server was lost.");
      }, this.disconnectGraceMs);
    }
  }

  _onDrop(reason) {
    if (this._intentional || this._reconnecting) return;
    if (this.state !== STATES.CONNECTED) return;
    this._teardownPeer();
    this.callId = null;
    if (!this.autoReconnect || this.maxReconnectAttempts <= 0) {
      this._stopMic();
      const err = new RealtimeError(reason, { code: "connection_lost" });
      this._setState(STATES.ERROR, { error: err, reason });
      this._emitError(err);
      return;
    }
    this._reconnectLoop(reason);
  }

  async _reconnectLoop(reason) {
    this._reconnecting = true;
    this._setState(STATES.RECONNECTING, { reason, attempt: 0 });
    let lastErr = null;
    try {
      for (let attempt = 1; attempt <= this.maxReconnectAttempts; attempt++) {
        const delay = this.reconnectDelayMs * 2 ** (attempt - 1);
        const token = this._reconnectToken;
        await new Promise((r) => { this._reconnectWake = r; this._reconnectTimer = setTimeout(r, delay); });
        if (this._intentional || token !== this._reconnectToken) return;
        try {
          await this._connectOnce(true);
          return;
        } catch (err) {
          if (isAbort(err) || this._intentional) return;
          lastErr = err;
          this._teardownPeer();
          if (err.status === 401 || err.status === 403) break;
          this._setState(STATES.RECONNECTING, { reason, attempt, error: err });
        }
      }
      this._stopMic();
      const err = new RealtimeError(
        `${reason} Reconnecting failed${lastErr ? `: ${lastErr.message}` : "."}`,
        { code: "reconnect_failed", status: lastErr && lastErr.status, cause: lastErr || undefined });
      this._setState(STATES.ERROR, { error: err, reason });
      this._emitError(err);
    } finally {
      this._reconnecting = false;
    }
  }

  _cancelReconnect() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._reconnectToken = {};
    const wake = this._reconnectWake;
    this._reconnectWake = null;
    if (wake) wake(); // lets a sleeping reconnect loop notice it was cancelled
  }

  // ------------------------------------------------------------------------------------------ audio

  _ensureAudioContext() {
    const AC = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!AC) return null;
    if (!this._ac || this._ac.state === "closed") this._ac = new AC();
    if (this._ac.state === "suspended") this._ac.resume().catch(() => {});
    return this._ac;
  }

  _makeAnalyser(stream) {
    const ac = this._ensureAudioContext();
    if (!ac) return [null, null];
    const src = ac.createMediaStreamSource(stream);
    const an = ac.createAnalyser();
    an.fftSize = 512;
    an.smoothingTimeConstant = 0;
    src.connect(an);
    return [src, an];
  }

  _attachMicAnalyser() {
    try {
      [this._micSource, this._micAnalyser] = this._makeAnalyser(this._micStream);
    } catch (e) { console.warn("mic analyser unavailable", e); }
    this._startLevels();
  }

  _onRemoteTrack(e) {
    if (e.track.kind !== "audio") return;
    const stream = (e.streams && e.streams[0]) || new MediaStream([e.track]);
    this._remoteStream = stream;
    // Chrome only feeds a remote WebRTC stream into WebAudio if it is also attached to a media element.
    if (!this.audioElement) {
      const el = document.createElement("audio");
      el.autoplay = true;
      el.setAttribute("playsinline", "");
      el.hidden = true;
      document.body.appendChild(el);
      this.audioElement = el;
      this._ownsAudioElement = true;
    }
    this.audioElement.autoplay = true;
    this.audioElement.srcObject = stream;
    const p = this.audioElement.play();
    if (p && p.catch) p.catch(() => { /* autoplay blocked: resumes on the next user gesture */ });
    try {
      if (this._remoteSource) this._remoteSource.disconnect();
      [this._remoteSource, this._remoteAnalyser] = this._makeAnalyser(stream);
    } catch (err) { console.warn("remote analyser unavailable", err); }
  }

  _startLevels() {
    this._stopLevels();
    this._levelBuf = new Float32Array(512);
    this._levelTimer = setInterval(() => this._tickLevels(), this.levelIntervalMs);
  }

  _stopLevels() {
    if (this._levelTimer) clearInterval(this._levelTimer);
    this._levelTimer = null;
  }

  _tickLevels() {
    const now = performance.now();
    const mic = this._recording ? rms(this._micAnalyser, this._levelBuf) : 0;
    const remote = rms(this._remoteAnalyser, this._levelBuf);
    this.levels = { mic, remote };
    if (mic > this.speechThresholds.mic) this._lat.lastMicLoudAt = now;
    const L = this._lat;
    if (L.awaiting) {
      if (remote <= this.speechThresholds.remote) {
        L.quietSeen = true;
      } else if (L.quietSeen) {
        L.awaiting = false;
        const ms = Math.max(0, Math.round(now - L.turnEnd));
        this.latencies.push(ms);
        try { this.onLatency(ms, { source: L.source, turnEnd: L.turnEnd, audioStart: now }); } catch (e) { console.error(e); }
      }
      if (now - L.since > 30000) L.awaiting = false;
    }
    try { this.onLevels({ mic, remote, time: now }); } catch (e) { console.error(e); }
  }

  // ------------------------------------------------------------------------------------------ events

  _onMessage(data) {
    let ev;
    try { ev = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data)); } catch {
      console.warn("voicecall: ignoring a non-JSON data channel message");
      return;
    }
    if (!ev || typeof ev.type !== "string") return;
    this._handleEvent(ev);
    try { this.onEvent(ev); } catch (e) { console.error(e); }
  }

  _transcript(itemId, role) {
    let t = this._transcripts.get(itemId);
    if (!t) { t = { role, parts: new Map(), final: false }; this._transcripts.set(itemId, t); }
    return t;
  }

  _emitTranscript(itemId, t, isFinal) {
    const text = [...t.parts.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]).join("");
    t.final = isFinal;
    try { this.onTranscript(text, isFinal, t.role, itemId); } catch (e) { console.error(e); }
  }

  _handleEvent(ev) {
    const now = performance.now();
    switch (ev.type) {
      case "session.created":
      case "session.updated":
        if (ev.session) this.session = ev.session;
        break;

      case "input_audio_buffer.speech_started": {
        this._lat.speechStartedAt = now;
        this._lat.awaiting = false;
        // Over a WebSocket the page plays the audio, so the page stops it (the server cannot) when the user talks.
        const td = this.session && this.session.audio && this.session.audio.input && this.session.audio.input.turn_detection;
        if (this.transport === "websocket" && (!td || td.interrupt_response !== false)) this._bargeIn();
        break;
      }

      case "response.output_audio.delta": {
        if (!this._audio || !ev.delta || this._mutedItems.has(ev.item_id)) break; // (WebRTC: audio comes as RTP)
        this._currentAudioItem = ev.item_id;
        try { this.onAudioChunk(ev.delta, ev); } catch (e) { console.error(e); }
        const fmt = this.session && this.session.audio && this.session.audio.output && this.session.audio.output.format;
        if (this.playAudio && (!fmt || fmt.type === "audio/pcm")) {
          this._audio.play(ev.item_id, ev.content_index ?? 0, pcm16FromBase64(ev.delta));
        }
        break;
      }

      case "input_audio_buffer.speech_stopped": {
        const L = this._lat;
        const windowStart = (L.speechStartedAt ?? now - 60000) - 1000;
        if (L.lastMicLoudAt != null && L.lastMicLoudAt >= windowStart && L.lastMicLoudAt <= now) {
          L.turnEnd = L.lastMicLoudAt; L.source = "mic";
        } else {
          L.turnEnd = now; L.source = "speech_stopped"; // mic never heard speech (muted or very quiet)
        }
        L.awaiting = true; L.since = now; L.quietSeen = false;
        break;
      }

      case "conversation.item.input_audio_transcription.delta": {
        if (!ev.item_id) break;
        const t = this._transcript(ev.item_id, "user");
        const idx = ev.content_index ?? 0;
        t.parts.set(idx, (t.parts.get(idx) || "") + (ev.delta || ""));
        this._emitTranscript(ev.item_id, t, false);
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        if (!ev.item_id) break;
        const t = this._transcript(ev.item_id, "user");
        t.parts.set(ev.content_index ?? 0, ev.transcript || "");
        this._emitTranscript(ev.item_id, t, true);
        break;
      }

      case "conversation.item.added":
      case "conversation.item.done":
      case "conversation.item.created": {
        // Typed user messages (input_text) have no transcription events: surface them as final transcripts.
        const item = ev.item;
        if (!item || item.type !== "message" || item.role !== "user" || !item.id || !Array.isArray(item.content)) break;
        if (this._transcripts.has(item.id)) break;
        const texts = item.content.filter((c) => c && c.type === "input_text" && typeof c.text === "string");
        if (!texts.length) break;
        const t = this._transcript(item.id, "user");
        texts.forEach((c, i) => t.parts.set(i, c.text));
        this._emitTranscript(item.id, t, true);
        break;
      }

      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": {
        if (!ev.item_id) break;
        const t = this._transcript(ev.item_id, "assistant");
        const idx = ev.content_index ?? 0;
        t.parts.set(idx, (t.parts.get(idx) || "") + (ev.delta || ""));
        this._emitTranscript(ev.item_id, t, false);
        break;
      }
      case "response.output_audio_transcript.done":
      case "response.output_text.done": {
        if (!ev.item_id) break;
        const t = this._transcript(ev.item_id, "assistant");
        const full = ev.type === "response.output_text.done" ? ev.text : ev.transcript;
        if (typeof full === "string") t.parts.set(ev.content_index ?? 0, full);
        this._emitTranscript(ev.item_id, t, true);
        break;
      }

      case "response.created":
        this.activeResponseId = (ev.response && ev.response.id) || "unknown";
        break;
      case "response.done":
        if (!ev.response || !this.activeResponseId || ev.response.id === this.activeResponseId || this.activeResponseId === "unknown") {
          this.activeResponseId = null;
        }
        break;

      case "error": {
        const e = ev.error || {};
        // Cancelling when nothing is playing is harmless (interrupt() races with the end of a response).
        if (e.code === "response_cancel_not_active") break;
        this._emitError(new RealtimeError(e.message || "The server reported an error.", { type: e.type, code: e.code, event: ev }));
        break;
      }
      default:
        break;
    }
  }

  // ------------------------------------------------------------------------------------------ helpers

  _setState(state, detail = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || detail.attempt) {
      try { this.onStateChange(state, detail); } catch (e) { console.error(e); }
    }
  }

  _emitError(err) {
    try { this.onError(err); } catch (e) { console.error(e); }
  }
}

/**
 * The seed-era client API over a WebSocket: `new OpenAIRealtime({model, voice, instructions, onTranscript(text,
 * isFinal), onAudioChunk(base64), ...})`, `connect()`, `startRecording()`, `stopRecording()`, `disconnect()`.
 * A RealtimeClient with `transport: "websocket"` and the microphone off until startRecording(); every
 * RealtimeClient option and method works too.
 */
export class OpenAIRealtime extends RealtimeClient {
  constructor(options = {}) {
    super({ transport: "websocket", recording: false, ...options });
  }
}

export default RealtimeClient;
