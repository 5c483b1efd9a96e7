// app.js: the voicecall web page. UI only; the protocol lives in realtime-client.js.
import { RealtimeClient, costOfUsage, median, GA_VOICES } from "./realtime-client.js";

const $ = (id) => document.getElementById(id);
const els = {
  connect: $("connect"), connectLabel: $("connect-label"), hint: $("connect-hint"),
  mute: $("mute"), muteLabel: $("mute-label"),
  status: $("status"), statusText: $("status-text"), backend: $("backend"),
  error: $("error"), errorText: $("error-text"), errorDismiss: $("error-dismiss"),
  transcript: $("transcript"), latency: $("latency"), cost: $("cost"),
  micLevel: $("mic-level"), micFill: document.querySelector("#mic-level .meter-fill"), orb: $("orb"),
  speakUser: $("speaking-user"), speakAssistant: $("speaking-assistant"),
  voice: $("voice"), instructions: $("instructions"), transport: $("transport"), settingsSaved: $("settings-saved"),
  auth: $("auth"), authForm: $("auth-form"), apiKey: $("api-key"), apiKeyClear: $("api-key-clear"),
  history: $("history"), historyList: $("history-list"), historyMore: $("history-more"),
  historyRefresh: $("history-refresh"), historyNote: $("history-note"),
  historyListView: $("history-list-view"), historyDetail: $("history-detail"), historyBack: $("history-back"),
  historyTitle: $("history-title"), historyMeta: $("history-meta"), historyTranscript: $("history-transcript"),
  exportJson: $("export-json"), exportMd: $("export-md"), historyDelete: $("history-delete"),
};

const SETTINGS_KEY = "voicecall.settings";
const API_KEY_KEY = "voicecall.apiKey";
// What this page used to fill in by default: a saved copy of it means "no instructions of my own" (the server's).
const OLD_DEFAULT_INSTRUCTIONS = "You are a friendly, helpful voice assistant. Keep your answers short and conversational.";
const REMOTE_SPEAKING_HOLD_MS = 300;
const MAX_EVENTS = 500;

// ---------------------------------------------------------------------------------------------- settings

function loadSettings() {
  try { return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") || {}; } catch { return {}; }
}
function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify({
      voice: els.voice.value, instructions: els.instructions.value, transport: els.transport.value }));
  } catch { /* storage disabled */ }
}
const saved = loadSettings();
if (saved.voice && GA_VOICES.includes(saved.voice)) els.voice.value = saved.voice;
if (saved.transport === "webrtc" || saved.transport === "websocket") els.transport.value = saved.transport;
els.instructions.value = typeof saved.instructions === "string" && saved.instructions !== OLD_DEFAULT_INSTRUCTIONS
  ? saved.instructions : "";
let serverInstructions = null; // the server's own instructions, learnt from session.created while the field is empty

/** The field's instructions, or undefined when it is empty: the server's configured instructions apply. */
function ownInstructions() {
  const text = els.instructions.value.trim();
  return text ? els.instructions.value : undefined;
}

function getApiKey() {
  try { return sessionStorage.getItem(API_KEY_KEY) || ""; } catch { return ""; }
}

// ---------------------------------------------------------------------------------------------- test hooks

const hooks = {
  client: null,
  state: "idle",
  transcripts: [],      // [{role, text, final, itemId}] in conversation order
  events: [],           // last 500 server event types
  sent: [],             // last 500 client event types
  latencies: [],        // ms, one per assistant turn
  remoteLevelMax: 0,    // highest remote (assistant) RMS level since the page loaded
  micLevelMax: 0,       // highest microphone RMS level since the page loaded
  micLevel: 0,
  remoteLevel: 0,
  speaking: { user: false, assistant: false },
  cost: 0,              // USD for the current call
  errors: [],           // error messages shown to the user
};
window.voicecall = hooks;

// ---------------------------------------------------------------------------------------------- client

let outputBufferActive = false;
let lastRemoteLoudAt = -Infinity;
let pendingSettingsUpdate = false;
let connectAfterAuth = false;
let hadCall = false; // this page has been connected at least once during the current call attempt
const bubbles = new Map(); // itemId -> {el, textEl, entry, committed}

const client = new RealtimeClient({
  transport: els.transport.value,
  voice: els.voice.value,
  instructions: ownInstructions(),
  apiKey: getApiKey,
  onStateChange,
  onError,
  onTranscript,
  onEvent,
  onLevels,
  onLatency,
  onSend: (ev) => pushCapped(hooks.sent, ev.type),
});
hooks.client = client;

function pushCapped(list, value) {
  list.push(value);
  if (list.length > MAX_EVENTS) list.splice(0, list.length - MAX_EVENTS);
}

function startCall() {
  hideError();
  saveSettings();
  client.voice = els.voice.value;
  client.instructions = ownInstructions();
  client.transport = els.transport.value;
  client.startRecording(); // one press connects and starts talking
  updateMuteButton();
  if (hadCall) addDivider("Reconnecting…"); // after a dropped call: keep its transcript
  else resetCallView();
  client.connect().catch(() => { /* reported through onError */ });
}

function endCall() {
  client.disconnect();
}

els.connect.addEventListener("click", () => {
  const s = client.state;
  if (s === "connected" || s === "connecting" || s === "reconnecting") endCall();
  else startCall();
});

els.mute.addEventListener("click", () => {
  if (client.isRecording) client.stopRecording(); else client.startRecording();
  updateMuteButton();
});

function updateMuteButton() {
  const muted = !client.isRecording;
  els.mute.setAttribute("aria-pressed", String(muted));
  els.muteLabel.textContent = muted ? "Unmute" : "Mute";
  els.mute.classList.toggle("is-muted", muted);
}

window.addEventListener("pagehide", () => {
  if (client.state !== "idle" && client.state !== "disconnected" && client.state !== "error") client.disconnect();
});

// ---------------------------------------------------------------------------------------------- state

const STATUS_TEXT = {
  idle: "Ready",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Call ended",
  error: "Error",
};

function onStateChange(state, detail = {}) {
  const prev = hooks.state;
  hooks.state = state;
  els.status.dataset.state = state;
  let text = STATUS_TEXT[state] || state;
  if (state === "reconnecting" && detail.attempt) text = `Reconnecting… (attempt ${detail.attempt + 1} of ${client.maxReconnectAttempts})`;
  els.statusText.textContent = text;
  document.body.dataset.state = state;

  const live = state === "connected" || state === "connecting" || state === "reconnecting";
  els.connect.dataset.mode = live ? "disconnect" : "connect";
  els.mute.disabled = state !== "connected";
  if (state === "disconnected" || state === "error") { client.startRecording(); updateMuteButton(); } // next call starts unmuted

  if (state === "connecting") {
    els.connectLabel.textContent = "Cancel";
    els.hint.textContent = "Connecting… allow microphone access if your browser asks.";
  } else if (state === "connected") {
    els.connectLabel.textContent = "Disconnect";
    els.hint.textContent = client.isRecording ? "Listening. Just start talking." : "You are muted.";
    hideErrorIfTransient();
    const backend = [client.provider, client.model].filter(Boolean).join(" · ");
    els.backend.textContent = backend;
    els.backend.hidden = !backend;
    if (prev === "reconnecting") addDivider("Reconnected. The assistant starts a fresh conversation.");
    hadCall = true;
  } else if (state === "reconnecting") {
    els.connectLabel.textContent = "Cancel";
    els.hint.textContent = "The connection dropped. Trying to reconnect…";
    if (prev === "connected") {
      addDivider("Connection lost. Reconnecting…");
      showError("The connection to the server was lost. Reconnecting…", { transient: true });
    }
    resetSpeaking();
  } else if (state === "error") {
    els.connectLabel.textContent = hadCall ? "Reconnect" : "Connect";
    els.hint.textContent = hadCall ? "The call was interrupted. Press Reconnect to try again." : "Could not connect. See the message above.";
    resetSpeaking();
    finishPendingBubbles();
    refreshHistorySoon();
  } else {
    els.connectLabel.textContent = "Connect";
    els.hint.textContent = state === "disconnected" ? "Call ended. Press Connect to start a new one." : "Press Connect, allow the microphone, and start talking.";
    if (state === "disconnected") { resetSpeaking(); finishPendingBubbles(); refreshHistorySoon(); hadCall = false; }

  }
}

function onError(err) {
  const message = (err && err.message) || String(err);
  pushCapped(hooks.errors, message);
  if (err && err.status === 401) {
    showAuth("This server requires an API key. Enter it below, then connect again.");
    connectAfterAuth = true;
    showError("This server requires an API key. Enter it in the “API key required” panel.");
    return;
  }
  if (err && err.code === "reconnect_failed") hadCall = true;
  showError(message);
}

// ---------------------------------------------------------------------------------------------- errors

let errorTransient = false;
function showError(message, { transient = false } = {}) {
  errorTransient = transient;
  els.errorText.textContent = message;
  els.error.hidden = false;
  els.error.dataset.kind = transient ? "warning" : "error";
}
function hideError() { els.error.hidden = true; els.errorText.textContent = ""; }
function hideErrorIfTransient() { if (errorTransient) hideError(); }
els.errorDismiss.addEventListener("click", () => { hideError(); els.connect.focus(); });
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !els.error.hidden) hideError();
});

// ---------------------------------------------------------------------------------------------- transcript

function isNearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 48; }

function withScroll(fn) {
  const stick = isNearBottom(els.transcript);
  fn();
  if (stick) els.transcript.scrollTop = els.transcript.scrollHeight;
}

function clearEmptyNote() {
  const empty = els.transcript.querySelector(".transcript-empty");
  if (empty) empty.remove();
}

function resetCallView() {
  bubbles.clear();
  hooks.transcripts.length = 0;
  hooks.latencies.length = 0;
  client.latencies.length = 0;
  hooks.cost = 0;
  tokens.input = tokens.cached = tokens.output = 0;
  stageCosts.clear();
  outputBufferActive = false;
  els.transcript.replaceChildren();
  const p = document.createElement("p");
  p.className = "transcript-empty";
  p.textContent = "Say something — your words and the assistant's replies appear here.";
  els.transcript.append(p);
  renderLatency();
  renderCost();
}

function addDivider(text) {
  withScroll(() => {
    clearEmptyNote();
    const d = document.createElement("p");
    d.className = "divider";
    d.textContent = text;
    els.transcript.append(d);
  });
}

/** Get or create the bubble of an item (in arrival order, so user placeholders keep their place). */
function ensureBubble(itemId, role) {
  let b = bubbles.get(itemId);
  if (b) return b;
  const el = document.createElement("div");
  el.className = `msg ${role} pending`;
  el.dataset.itemId = itemId;
  el.setAttribute("aria-busy", "true");
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = role === "user" ? "You said: " : "Assistant said: ";
  const textEl = document.createElement("p");
  textEl.className = "msg-text";
  el.append(who, textEl);
  const entry = { role, text: "", final: false, itemId };
  hooks.transcripts.push(entry);
  b = { el, textEl, entry, committed: false };
  bubbles.set(itemId, b);
  withScroll(() => { clearEmptyNote(); els.transcript.append(el); });
  return b;
}

function setBubbleText(b, text, final) {
  withScroll(() => {
    b.entry.text = text;
    b.entry.final = final;
    b.textEl.textContent = text;
    b.el.classList.toggle("pending", !text && !final);
    b.el.classList.toggle("partial", !final);
    b.el.classList.toggle("final", final);
    if (text) b.el.classList.remove("placeholder");
    b.el.setAttribute("aria-busy", String(!final));
  });
}

/** Finalize a bubble that has no text with a label that is only displayed (hooks keep text ""). */
function setPlaceholder(b, label) {
  setBubbleText(b, b.entry.text, true);
  b.textEl.textContent = label;
  b.el.classList.add("placeholder");
}

function markBubble(b, note) {
  if (b.el.querySelector(".msg-note")) return;
  const n = document.createElement("span");
  n.className = "msg-note";
  n.textContent = note;
  b.el.append(n);
}

function onTranscript(text, isFinal, role, itemId) {
  const b = ensureBubble(itemId, role);
  b.committed = true;
  setBubbleText(b, text, isFinal);
}

/** A user bubble whose audio was never committed is a false start: drop it. Committed ones get a label. */
function settleUserPlaceholders(exceptId) {
  for (const [id, b] of bubbles) {
    if (id === exceptId || b.entry.role !== "user" || b.entry.text || b.entry.final) continue;
    if (!b.committed) {
      b.el.remove();
      bubbles.delete(id);
      const i = hooks.transcripts.indexOf(b.entry);
      if (i >= 0) hooks.transcripts.splice(i, 1);
    }
  }
}

function transcriptionEnabled() {
  const s = client.session;
  const tr = s && s.audio && s.audio.input ? s.audio.input.transcription : undefined;
  return tr !== null; // unknown (undefined) counts as enabled
}

function finishPendingBubbles() {
  settleUserPlaceholders(null);
  for (const b of bubbles.values()) {
    if (b.entry.final) continue;
    if (!b.entry.text) {
      setPlaceholder(b, b.entry.role === "user" ? "(voice message)" : "(audio reply)");
    } else {
      setBubbleText(b, b.entry.text, true);
    }
  }
}

// ---------------------------------------------------------------------------------------------- events

function onEvent(ev) {
  pushCapped(hooks.events, ev.type);
  switch (ev.type) {
    case "input_audio_buffer.speech_started":
      settleUserPlaceholders(ev.item_id);
      setSpeaking("user", true);
      if (ev.item_id) ensureBubble(ev.item_id, "user");
      break;
    case "input_audio_buffer.speech_stopped":
      setSpeaking("user", false);
      break;
    case "input_audio_buffer.committed":
      if (ev.item_id) {
        const b = ensureBubble(ev.item_id, "user");
        b.committed = true;
        if (!transcriptionEnabled() && !b.entry.text) setPlaceholder(b, "(voice message)");
      }
      break;
    case "input_audio_buffer.cleared":
      settleUserPlaceholders(null);
      break;
    case "conversation.item.added":
    case "conversation.item.created": {
      const item = ev.item;
      if (item && item.type === "message" && item.id && (item.role === "user" || item.role === "assistant")) {
        const b = ensureBubble(item.id, item.role);
        b.committed = true;
      }
      break;
    }
    case "conversation.item.input_audio_transcription.failed": {
      if (!ev.item_id) break;
      const b = ensureBubble(ev.item_id, "user");
      b.committed = true;
      if (!b.entry.text) setPlaceholder(b, "(could not transcribe)");
      break;
    }
    case "response.output_item.added": {
      const item = ev.item;
      if (item && item.type === "message" && item.id) {
        const b = ensureBubble(item.id, "assistant");
        b.committed = true;
        b.responseId = ev.response_id || null;
      }
      break;
    }
    case "output_audio_buffer.started":
      outputBufferActive = true;
      updateAssistantSpeaking(performance.now());
      break;
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      outputBufferActive = false;
      updateAssistantSpeaking(performance.now());
      break;
    case "response.done": {
      const r = ev.response || {};
      const pipelineCost = r.x_voicecall && r.x_voicecall.cost;
      if (pipelineCost) {
        // A local pipeline prices itself, per stage (STT minutes, LLM tokens, TTS characters).
        hooks.cost += pipelineCost.total_usd || 0;
        addStageCosts(pipelineCost.stages || {});
      } else if (r.usage) {
        hooks.cost += costOfUsage(r.usage, client.pricing);
      }
      if (r.usage) addTokens(r.usage);
      if (r.usage || pipelineCost) renderCost();
      const outputs = new Map((r.output || []).filter((i) => i && i.id).map((i) => [i.id, i]));
      for (const b of bubbles.values()) {
        if (r.id && b.responseId === r.id && !outputs.has(b.entry.itemId)) outputs.set(b.entry.itemId, { id: b.entry.itemId });
      }
      for (const item of outputs.values()) {
        const b = bubbles.get(item.id);
        if (!b) continue;
        const cancelled = r.status === "cancelled";
        if (!b.entry.final) {
          const part = (item.content || []).find((c) => c && (c.transcript || c.text));
          const text = b.entry.text || (part && (part.transcript || part.text)) || "";
          if (text) setBubbleText(b, text, true);
          else setPlaceholder(b, cancelled ? "(interrupted)" : "(audio reply)");
        }
        if (cancelled && b.entry.text) markBubble(b, "interrupted");
      }
      if (r.status === "failed") {
        const e = r.status_details && r.status_details.error;
        showError(`The assistant could not answer${e && (e.message || e.code) ? `: ${e.message || e.code}` : "."}`);
      }
      break;
    }
    case "session.created":
      if (ownInstructions() === undefined && ev.session && typeof ev.session.instructions === "string") {
        serverInstructions = ev.session.instructions;
        els.instructions.placeholder = serverInstructions;
      }
      break;
    case "session.updated":
      if (pendingSettingsUpdate) {
        pendingSettingsUpdate = false;
        flashSaved("Applied to the current call.");
      }
      break;
    case "error":
      if (pendingSettingsUpdate) pendingSettingsUpdate = false;
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------- speaking, levels

function setSpeaking(role, active) {
  if (hooks.speaking[role] === active) return;
  hooks.speaking[role] = active;
  const el = role === "user" ? els.speakUser : els.speakAssistant;
  el.dataset.active = String(active);
  el.querySelector(".speaker-state").textContent = active ? " (speaking)" : " (silent)";
}

function resetSpeaking() {
  outputBufferActive = false;
  lastRemoteLoudAt = -Infinity;
  setSpeaking("user", false);
  setSpeaking("assistant", false);
}

function updateAssistantSpeaking(now) {
  setSpeaking("assistant", outputBufferActive || now - lastRemoteLoudAt < REMOTE_SPEAKING_HOLD_MS);
}

let levelFrame = 0;
let lastAriaUpdate = 0;
function onLevels({ mic, remote, time }) {
  hooks.micLevel = mic;
  hooks.remoteLevel = remote;
  if (mic > hooks.micLevelMax) hooks.micLevelMax = mic;
  if (remote > hooks.remoteLevelMax) hooks.remoteLevelMax = remote;
  if (remote > client.speechThresholds.remote) lastRemoteLoudAt = time;
  if (client.state === "connected") updateAssistantSpeaking(time);
  if (!levelFrame) levelFrame = requestAnimationFrame(renderLevels);
}

/** RMS (0..1) to a 0..1 display scale: -60 dBFS and below is empty, 0 dBFS is full. */
function toDisplay(rmsValue) {
  if (!(rmsValue > 0)) return 0;
  return Math.max(0, Math.min(1, (20 * Math.log10(rmsValue) + 60) / 60));
}

function renderLevels(t) {
  levelFrame = 0;
  const live = client.state === "connected" || client.state === "connecting" || client.state === "reconnecting";
  const mic = live ? toDisplay(hooks.micLevel) : 0;
  const remote = live ? toDisplay(hooks.remoteLevel) : 0;
  els.micFill.style.transform = `scaleX(${mic.toFixed(3)})`;
  els.orb.style.setProperty("--remote", remote.toFixed(3));
  els.orb.style.setProperty("--mic", mic.toFixed(3));
  if (t - lastAriaUpdate > 500) {
    lastAriaUpdate = t;
    els.micLevel.setAttribute("aria-valuenow", String(Math.round(mic * 100)));
  }
}

// ---------------------------------------------------------------------------------------------- latency, cost

function onLatency(ms) {
  hooks.latencies.push(ms);
  renderLatency();
}

function renderLatency() {
  const l = hooks.latencies;
  if (!l.length) {
    els.latency.textContent = "—";
    return;
  }
  const last = l[l.length - 1];
  const med = Math.round(median(l));
  els.latency.innerHTML = "";
  const main = document.createElement("span");
  main.className = "stat-main";
  main.textContent = `${last} ms`;
  const sub = document.createElement("span");
  sub.className = "stat-sub";
  sub.textContent = `median ${med} ms · ${l.length} turn${l.length === 1 ? "" : "s"}`;
  els.latency.append(main, " ", sub);
}

const tokens = { input: 0, cached: 0, output: 0 };
function addTokens(u) {
  tokens.input += u.input_tokens || 0;
  tokens.output += u.output_tokens || 0;
  tokens.cached += (u.input_token_details && u.input_token_details.cached_tokens) || 0;
}

const stageCosts = new Map(); // "stt" -> {usd, providers:Set}
function addStageCosts(stages) {
  for (const [stage, block] of Object.entries(stages)) {
    const acc = stageCosts.get(stage) || { usd: 0, providers: new Set() };
    acc.usd += block.usd || 0;
    for (const p of block.providers || []) if (p.provider) acc.providers.add(p.provider);
    stageCosts.set(stage, acc);
  }
}

function renderCost() {
  const anyPriced = [...stageCosts.values()].some((v) => v.usd > 0);  // an all-embedded stack shows just $0
  const split = anyPriced ? [...stageCosts].map(([stage, v]) => `${stage.toUpperCase()} $${v.usd.toFixed(4)}`) : [];
  els.cost.textContent = `$${hooks.cost.toFixed(4)}` + (split.length ? ` (${split.join(" · ")})` : "");
  const priced = client.pricing && Object.values(client.pricing).some((v) => v > 0);
  const who = [...stageCosts].map(([stage, v]) => `${stage}: ${[...v.providers].join(", ")}`).join("; ");
  els.cost.title = `${tokens.input} input tokens (${tokens.cached} cached), ${tokens.output} output tokens` +
    (who ? ` · ${who}` : "") +
    (client.pricing && !priced && !anyPriced ? " · this server's local engine is free" : "");
}

// ---------------------------------------------------------------------------------------------- settings

function flashSaved(text) {
  els.settingsSaved.textContent = text;
  clearTimeout(flashSaved.t);
  flashSaved.t = setTimeout(() => { els.settingsSaved.textContent = ""; }, 4000);
}

function applySetting(partial) {
  saveSettings();
  if (client.state === "connected") {
    try {
      client.updateSession(partial);
      pendingSettingsUpdate = true;
    } catch (err) { onError(err); }
  } else {
    client.updateSession(partial); // remembered for the next connect
    flashSaved("Saved. Used when you connect.");
  }
}

els.voice.addEventListener("change", () => applySetting({ audio: { output: { voice: els.voice.value } } }));
els.transport.addEventListener("change", () => {
  saveSettings();
  flashSaved(client.state === "connected" ? "Saved. Used from the next call." : "Saved. Used when you connect.");
});
els.instructions.addEventListener("change", () => {
  const own = ownInstructions();
  if (own !== undefined) applySetting({ instructions: own });
  else if (client.state === "connected" && serverInstructions !== null) applySetting({ instructions: serverInstructions });
  else { client.instructions = undefined; saveSettings(); flashSaved("Saved. The server's instructions apply."); }
});

// ---------------------------------------------------------------------------------------------- API key

function showAuth(note) {
  els.auth.hidden = false;
  const p = els.auth.querySelector(".muted");
  if (note) p.textContent = note;
  els.apiKey.value = getApiKey();
  els.apiKey.focus();
}

els.authForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = els.apiKey.value.trim();
  if (!key) return;
  try { sessionStorage.setItem(API_KEY_KEY, key); } catch { /* ignore */ }
  els.auth.hidden = true;
  hideError();
  if (els.history.open) loadHistory(true);
  if (connectAfterAuth) { connectAfterAuth = false; startCall(); }
  else els.connect.focus();
});
els.apiKeyClear.addEventListener("click", () => {
  try { sessionStorage.removeItem(API_KEY_KEY); } catch { /* ignore */ }
  els.apiKey.value = "";
  els.apiKey.focus();
});

class HttpError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

/** fetch() for /api calls: adds the API key, turns errors into HttpError with the server's message. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = getApiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new HttpError(`Could not reach the server: ${err.message}`, 0);
  }
  if (res.status === 401) {
    showAuth("This server requires an API key to show history. Enter it below.");
    throw new HttpError("This server requires an API key.", 401);
  }
  if (!res.ok) {
    let message = `Request failed (HTTP ${res.status})`;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
      else if (body && typeof body.detail === "string") message = body.detail;
    } catch { /* not JSON */ }
    throw new HttpError(message, res.status);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------- history

let historyCursor = null;
let historyLoaded = false;
let historyStale = false;
let historyCurrent = null;

function toDate(v) {
  if (v == null || v === "") return null;
  if (typeof v === "number") return new Date(v < 1e12 ? v * 1000 : v);
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
function fmtDate(v) { const d = toDate(v); return d ? dateFmt.format(d) : ""; }
function fmtDuration(startedAt, endedAt) {
  const a = toDate(startedAt), b = toDate(endedAt);
  if (!a || !b) return "";
  return fmtMs(b - a);
}
function fmtMs(ms) {
  if (!(ms >= 0)) return "";
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function fmtUsd(v) { return typeof v === "number" ? `$${v.toFixed(4)}` : ""; }

els.history.addEventListener("toggle", () => {
  if (els.history.open && (!historyLoaded || historyStale)) loadHistory(true);
});
els.historyRefresh.addEventListener("click", () => loadHistory(true));
els.historyMore.addEventListener("click", () => loadHistory(false));

function refreshHistorySoon() {
  historyStale = true;
  if (els.history.open && els.historyDetail.hidden) setTimeout(() => loadHistory(true), 800);
}

async function loadHistory(reset) {
  if (reset) historyCursor = null;
  historyStale = false;
  const params = new URLSearchParams({ limit: "20" });
  if (!reset && historyCursor) params.set("cursor", historyCursor);
  els.historyNote.textContent = "Loading…";
  try {
    const res = await api(`/api/conversations?${params}`);
    const body = await res.json();
    const rows = Array.isArray(body.data) ? body.data : [];
    if (reset) els.historyList.replaceChildren();
    for (const row of rows) els.historyList.append(historyRow(row));
    historyCursor = body.next_cursor || null;
    els.historyMore.hidden = !historyCursor;
    historyLoaded = true;
    const count = els.historyList.children.length;
    els.historyNote.textContent = count ? "Past conversations on this server." : "No conversations yet.";
  } catch (err) {
    els.historyNote.textContent = err.status === 404 ? "History is turned off on this server."
      : err.status === 401 ? "Enter the API key to see history." : err.message;
  }
}

function historyRow(row) {
  const li = document.createElement("li");
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "history-item";
  const title = document.createElement("span");
  title.className = "history-item-title";
  title.textContent = row.title || "Untitled conversation";
  const meta = document.createElement("span");
  meta.className = "history-item-meta";
  meta.textContent = [fmtDate(row.started_at), row.voice, row.transport,
    row.item_count != null ? `${row.item_count} item${row.item_count === 1 ? "" : "s"}` : "", fmtUsd(row.cost_usd)]
    .filter(Boolean).join(" · ");
  btn.append(title, meta);
  btn.addEventListener("click", () => openConversation(row.id));
  li.append(btn);
  return li;
}

async function openConversation(id) {
  try {
    const res = await api(`/api/conversations/${encodeURIComponent(id)}`);
    const conv = await res.json();
    historyCurrent = conv;
    renderConversation(conv);
  } catch (err) {
    showError(`Could not open the conversation: ${err.message}`);
  }
}

function renderConversation(conv) {
  els.historyListView.hidden = true;
  els.historyDetail.hidden = false;
  els.historyTitle.textContent = conv.title || "Untitled conversation";
  els.historyMeta.textContent = [fmtDate(conv.started_at), fmtDuration(conv.started_at, conv.ended_at),
    [conv.provider, conv.model].filter(Boolean).join(" / "), conv.voice, conv.transport, fmtUsd(conv.cost_usd)]
    .filter(Boolean).join(" · ");
  const base = `/api/conversations/${encodeURIComponent(conv.id)}/export`;
  els.exportJson.href = `${base}?format=json`;
  els.exportJson.setAttribute("download", `conversation-${conv.id}.json`);
  els.exportMd.href = `${base}?format=md`;
  els.exportMd.setAttribute("download", `conversation-${conv.id}.md`);

  const box = els.historyTranscript;
  box.replaceChildren();
  const items = Array.isArray(conv.items) ? conv.items : [];
  for (const item of items) {
    const role = ["user", "assistant"].includes(item.role) ? item.role : "system";
    const el = document.createElement("div");
    el.className = `msg ${role} final`;
    const who = document.createElement("span");
    who.className = "visually-hidden";
    who.textContent = role === "user" ? "You said: " : role === "assistant" ? "Assistant said: " : `${item.role || item.type}: `;
    const text = document.createElement("p");
    text.className = "msg-text";
    let t = item.text;
    if (!t) {
      if (item.type === "function_call") t = "(tool call)";
      else if (item.type === "function_call_output") t = "(tool result)";
      else t = item.audio_ms ? "(voice message)" : "(empty)";
      el.classList.add("placeholder");
    }
    text.textContent = t;
    el.append(who, text);
    if (item.audio_ms) {
      const n = document.createElement("span");
      n.className = "msg-note";
      n.textContent = fmtMs(item.audio_ms);
      n.title = "Audio length";
      el.append(n);
    }
    box.append(el);
  }
  if (!items.length) {
    const p = document.createElement("p");
    p.className = "transcript-empty";
    p.textContent = "This conversation has no messages.";
    box.append(p);
  }
  els.historyTitle.focus();
}

function closeConversation() {
  historyCurrent = null;
  els.historyDetail.hidden = true;
  els.historyListView.hidden = false;
  if (historyStale) loadHistory(true);
}
els.historyBack.addEventListener("click", () => { closeConversation(); els.historyRefresh.focus(); });

/** With an API key, plain links cannot send the Authorization header: download through fetch instead. */
for (const link of [els.exportJson, els.exportMd]) {
  link.addEventListener("click", async (e) => {
    if (!getApiKey()) return; // plain link works
    e.preventDefault();
    try {
      const res = await api(link.getAttribute("href"));
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = link.getAttribute("download") || "conversation";
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showError(`Export failed: ${err.message}`);
    }
  });
}

els.historyDelete.addEventListener("click", async () => {
  const conv = historyCurrent;
  if (!conv) return;
  if (!window.confirm(`Delete “${conv.title || "Untitled conversation"}”? This cannot be undone.`)) return;
  try {
    await api(`/api/conversations/${encodeURIComponent(conv.id)}`, { method: "DELETE" });
    historyStale = true;
    closeConversation();
    els.historyRefresh.focus();
  } catch (err) {
    showError(`Could not delete the conversation: ${err.message}`);
  }
});

// ---------------------------------------------------------------------------------------------- init

updateMuteButton();
renderCost();
if (!window.isSecureContext) {
  els.hint.textContent = "This page is not on https:// or localhost, so the browser will not allow the microphone.";
}
