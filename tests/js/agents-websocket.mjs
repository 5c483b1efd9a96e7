// @openai/agents-realtime over WebSocket in Node, in its README quickstart shape (RealtimeAgent + RealtimeSession,
// default transport, default model), pointed at a voicecall server. Run by tests/conformance/test_agents_sdk.py:
//
//   node agents-websocket.mjs <ws url of /v1/realtime> <api key> <speech.pcm (PCM16 mono 24 kHz)>
//
// There is deliberately NO `session.on('error')` listener, as in the quickstart: a server `error` event becomes an
// unhandled EventEmitter error and the process exits with code 1. On success it prints one JSON line (what the
// session saw) and exits 0; on a timeout it prints the same JSON and exits 3.
import { readFileSync } from "node:fs";
import { RealtimeAgent, RealtimeSession, tool } from "@openai/agents-realtime";
import { z } from "zod";

const [url, apiKey, pcmPath] = process.argv.slice(2);
const INSTRUCTIONS = "You are a terse assistant. Answer in one short sentence.";

const getWeather = tool({
  name: "get_weather",
  description: "Get the weather for a city.",
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => `It is sunny in ${city}.`,
});

const agent = new RealtimeAgent({ name: "Assistant", instructions: INSTRUCTIONS, tools: [getWeather] });
const session = new RealtimeSession(agent);

const seen = { types: [], sessionUpdated: [], userTranscripts: [], assistantTranscripts: [], audioBytes: 0,
  history: [], transport: null };
session.on("transport_event", (ev) => {
  seen.types.push(ev.type);
  if (ev.type === "session.updated") seen.sessionUpdated.push(ev.session);
  if (ev.type === "conversation.item.input_audio_transcription.completed") seen.userTranscripts.push(ev.transcript);
  if (ev.type === "response.output_audio_transcript.done") seen.assistantTranscripts.push(ev.transcript);
  if (ev.type === "response.done") maybeDone();
  if (ev.type === "conversation.item.input_audio_transcription.completed") maybeDone();
});
session.on("audio", (ev) => { seen.audioBytes += ev.data.byteLength; });
session.on("history_updated", (history) => {
  seen.history = history.map((item) => ({ role: item.role, type: item.type, status: item.status,
    content: (item.content || []).map((c) => ({ type: c.type, transcript: c.transcript ?? c.text ?? null })) }));
});

let finished = false;
function report(code) {
  if (finished) return;
  finished = true;
  seen.transport = session.transport.constructor.name;
  process.stdout.write(JSON.stringify(seen) + "\n");
  // Close only after the SDK has handled the event that got us here: our transport_event listener runs before the
  // SDK's own handling of the same message, and on `...input_audio_transcription.completed` the SDK then sends
  // `conversation.item.retrieve` (throwing "WebSocket is not connected" if we had closed synchronously). The pause
  // also lets the server's answer to that retrieve arrive, as in a real app that keeps its session open.
  setTimeout(() => {
    try { session.close(); } catch { /* closing is best effort */ }
    setTimeout(() => process.exit(code), 50);
  }, 300);
}
function maybeDone() {
  if (seen.types.includes("response.done") && seen.userTranscripts.length && seen.audioBytes > 0) report(0);
}
setTimeout(() => report(3), 60000);

await session.connect({ apiKey, url });

// The microphone: 100 ms PCM16 chunks, a little faster than real time (the server's VAD runs on audio time).
const pcm = readFileSync(pcmPath);
const CHUNK = 4800;
for (let i = 0; i < pcm.length && !finished; i += CHUNK) {
  const part = pcm.subarray(i, Math.min(i + CHUNK, pcm.length));
  session.sendAudio(part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength));
  await new Promise((r) => setTimeout(r, 25));
}
// Then "room silence" until the turn is done (a live microphone keeps sending).
const silence = new ArrayBuffer(CHUNK);
while (!finished) {
  session.sendAudio(silence);
  await new Promise((r) => setTimeout(r, 100));
}
