// pcm-audio.js: raw PCM16 24 kHz audio in the browser, for the Realtime protocol over a WebSocket
// (input_audio_buffer.append in, response.output_audio.delta out). Used by realtime-client.js.
//
// - Microphone: an AudioWorklet resamples the microphone (the AudioContext's rate, usually 48 kHz) to 24 kHz mono
//   PCM16 and hands over 40 ms chunks.
// - Playback: an AudioWorklet plays queued 24 kHz chunks back to back (gapless: the next chunk continues at the
//   exact sample the last one ended, resampled to the context's rate) and counts, per item, how many samples were
//   really played, so that a barge-in can truncate the item where the listener stopped hearing it.
//
// The worklet code is loaded from a Blob, so a page on another origin can use this module without extra CORS rules.

export const PCM_RATE = 24000;

const WORKLET_SOURCE = String.raw`
const PCM_RATE = ${PCM_RATE};

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.step = sampleRate / PCM_RATE;          // input samples per output sample
    this.size = Math.round(PCM_RATE * (o.chunkMs || 40) / 1000);
    this.chunk = new Int16Array(this.size);
    this.fill = 0;
    this.pos = 0;                                // fractional read position in the current input block
    this.prev = 0;                               // last input sample of the previous block (for interpolation)
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length || !input[0].length) return true;
    const chans = input.length, n = input[0].length;
    const mono = chans === 1 ? input[0] : (() => {
      const m = new Float32Array(n);
      for (let c = 0; c < chans; c++) { const d = input[c]; for (let i = 0; i < n; i++) m[i] += d[i] / chans; }
      return m;
    })();
    // Position -1 means "the previous block's last sample": linear interpolation across block boundaries.
    while (this.pos < n - 1) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const a = i < 0 ? this.prev : mono[i];
      const b = mono[i + 1];
      let s = a + (b - a) * f;
      s = s < -1 ? -1 : s > 1 ? 1 : s;
      this.chunk[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.fill === this.size) {
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]); // transferred: a new chunk follows
        this.chunk = new Int16Array(this.size);
        this.fill = 0;
      }
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = mono[n - 1];
    return true;
  }
}

class Pcm16Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = PCM_RATE / sampleRate;           // source samples per output sample
    this.queue = [];                             // [{itemId, contentIndex, offset, data: Float32Array}]
    this.pos = 0;                                // fractional read position in queue[0]
    this.last = null;                            // {itemId, contentIndex, played} of the chunk last played
    this.sinceReport = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }
  onMessage(msg) {
    if (msg.type === "push") {
      const pcm = new Int16Array(msg.pcm);
      const data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 0x8000;
      this.queue.push({ itemId: msg.itemId, contentIndex: msg.contentIndex, offset: msg.offset, data });
    } else if (msg.type === "clear") {
      const head = this.position();
      const queued = this.queued();
      this.queue = [];
      this.pos = 0;
      this.port.postMessage({ type: "cleared", id: msg.id, ...head, queued });
    }
  }
  position() {
    const c = this.queue[0];
    if (c) return { itemId: c.itemId, contentIndex: c.contentIndex, played: c.offset + Math.floor(this.pos) };
    return this.last ? { ...this.last } : { itemId: null, contentIndex: 0, played: 0 };
  }
  queued() {
    let n = -Math.floor(this.pos);
    for (const c of this.queue) n += c.data.length;
    return Math.max(0, n);
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    const wasPlaying = this.queue.length > 0;
    for (let i = 0; i < out.length; i++) {
      const c = this.queue[0];
      if (!c) { out[i] = 0; continue; }
      const k = Math.floor(this.pos), f = this.pos - k;
      const a = c.data[k];
      const b = k + 1 < c.data.length ? c.data[k + 1] : (this.queue[1] ? this.queue[1].data[0] : a);
      out[i] = a + (b - a) * f;
      this.pos += this.step;
      while (this.queue.length && this.pos >= this.queue[0].data.length) {
        const done = this.queue.shift();
        this.pos -= done.data.length;
        this.last = { itemId: done.itemId, contentIndex: done.contentIndex, played: done.offset + done.data.length };
        if (!this.queue.length) this.pos = 0;
      }
    }
    for (let ch = 1; ch < outputs[0].length; ch++) outputs[0][ch].set(out);
    this.sinceReport += out.length;
    const drained = wasPlaying && !this.queue.length;
    if (drained || (this.queue.length && this.sinceReport >= sampleRate / 20)) {
      this.sinceReport = 0;
      this.port.postMessage({ type: "progress", ...this.position(), queued: this.queued() });
    }
    return true;
  }
}

registerProcessor("voicecall-pcm16-capture", Pcm16Capture);
registerProcessor("voicecall-pcm16-player", Pcm16Player);
`;

const loaded = new WeakMap(); // AudioContext -> Promise (addModule runs once per context)

function loadWorklet(ac) {
  let p = loaded.get(ac);
  if (!p) {
    const url = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
    p = ac.audioWorklet.addModule(url).finally(() => URL.revokeObjectURL(url));
    loaded.set(ac, p);
  }
  return p;
}

/** Base64 of little-endian PCM16 (what input_audio_buffer.append carries). */
export function base64FromPcm16(buffer) {
  const bytes = new Uint8Array(buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** An ArrayBuffer of PCM16 from base64 (what response.output_audio.delta carries). */
export function pcm16FromBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length & ~1);
  for (let i = 0; i < bytes.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

/**
 * Microphone capture and gapless playback of PCM16 24 kHz on one AudioContext.
 *
 * `output` is the node the assistant's audio leaves through (connect an AnalyserNode to it for levels).
 */
export class PcmAudio {
  static async create(ac, { destination = ac.destination } = {}) {
    await loadWorklet(ac);
    return new PcmAudio(ac, destination);
  }

  constructor(ac, destination) {
    this.ac = ac;
    this.player = new AudioWorkletNode(ac, "voicecall-pcm16-player", { numberOfInputs: 0, outputChannelCount: [1] });
    this.output = this.player;
    this.player.connect(destination);
    this.player.port.onmessage = (e) => this._onPlayer(e.data);
    this.capture = null;
    this._sink = null;
    this._pushed = new Map(); // `${itemId}/${contentIndex}` -> samples sent to the player
    this._clears = new Map();
    this._clearId = 0;
    this._unreported = 0; // samples pushed since the player's last report
    /** {itemId, contentIndex, played, queued}: the player's last report (played in 24 kHz samples). */
    this.position = { itemId: null, contentIndex: 0, played: 0, queued: 0 };
  }

  /** True while audio sent to the player has not been heard yet. */
  get playing() {
    return this.position.queued > 0 || this._unreported > 0;
  }

  /** Queue PCM16 (an ArrayBuffer, 24 kHz mono) of one item's audio part; returns the item's samples so far. */
  play(itemId, contentIndex, buffer) {
    const key = `${itemId}/${contentIndex}`;
    const offset = this._pushed.get(key) || 0;
    const n = buffer.byteLength >> 1;
    this._pushed.set(key, offset + n);
    this._unreported += n;
    this.player.port.postMessage({ type: "push", itemId, contentIndex, offset, pcm: buffer }, [buffer]);
    return offset + n;
  }

  /** Stop playback at once and drop what is queued. Resolves to {itemId, contentIndex, played, queued}: where it
   * stopped (played = samples of that item heard) and how many samples were dropped. */
  stop() {
    const id = ++this._clearId;
    return new Promise((resolve) => {
      this._clears.set(id, resolve);
      this.player.port.postMessage({ type: "clear", id });
    });
  }

  /** Samples of an item's audio part sent to the player. */
  pushed(itemId, contentIndex = 0) {
    return this._pushed.get(`${itemId}/${contentIndex}`) || 0;
  }

  /** Start sending the microphone (`source`: a MediaStreamAudioSourceNode) as PCM16 24 kHz chunks to `onChunk`. */
  startCapture(source, onChunk, { chunkMs = 40 } = {}) {
    this.stopCapture();
    const node = new AudioWorkletNode(this.ac, "voicecall-pcm16-capture", {
      numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { chunkMs },
    });
    node.port.onmessage = (e) => onChunk(e.data);
    // A node only runs while something pulls on it: route it into the destination through a muted gain.
    const sink = this.ac.createGain();
    sink.gain.value = 0;
    source.connect(node);
    node.connect(sink);
    sink.connect(this.ac.destination);
    this.capture = { node, source };
    this._sink = sink;
  }

  stopCapture() {
    if (!this.capture) return;
    const { node, source } = this.capture;
    node.port.onmessage = null;
    try { source.disconnect(node); } catch { /* already disconnected */ }
    try { node.disconnect(); } catch { /* ignore */ }
    try { this._sink.disconnect(); } catch { /* ignore */ }
    this.capture = null;
    this._sink = null;
  }

  close() {
    this.stopCapture();
    this.player.port.onmessage = null;
    try { this.player.disconnect(); } catch { /* ignore */ }
    for (const resolve of this._clears.values()) resolve({ ...this.position, queued: 0 });
    this._clears.clear();
    this._pushed.clear();
  }

  _onPlayer(msg) {
    if (msg.type === "progress") {
      this.position = { itemId: msg.itemId, contentIndex: msg.contentIndex, played: msg.played, queued: msg.queued };
      this._unreported = 0;
    } else if (msg.type === "cleared") {
      this.position = { itemId: msg.itemId, contentIndex: msg.contentIndex, played: msg.played, queued: 0 };
      this._unreported = 0;
      const resolve = this._clears.get(msg.id);
      this._clears.delete(msg.id);
      if (resolve) resolve({ itemId: msg.itemId, contentIndex: msg.contentIndex, played: msg.played, queued: msg.queued });
    }
  }
}
