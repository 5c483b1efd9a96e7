// openai-node (the official `openai` package) realtime over WebSocket, in its README shape (`OpenAIRealtimeWS`,
// `rt.on('error', (err) => { throw err; })`), pointed at a voicecall server. Run by
// tests/conformance/test_openai_node.py:
//
//   node openai-node-websocket.mjs <https base URL ending in /v1> <api key> <speech.pcm (PCM16 mono 24 kHz)>
//
// openai-node always dials wss:// (it has no plain ws:// option), so the server runs behind TLS here, trusted
// through NODE_EXTRA_CA_CERTS. An `error` event throws (exit code 1). On success one JSON line, exit 0; on a
// timeout the same JSON and exit 3.
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const [baseURL, apiKey, pcmPath] = process.argv.slice(2);
const INSTRUCTIONS = "You are a terse assistant. Answer in one short sentence.";

const client = new OpenAI({ apiKey, baseURL });
const rt = new OpenAIRealtimeWS({ model: "gpt-realtime" }, client);
rt.on("error", (err) => { throw err; }); // as in the README: any error ends the process

const seen = { url: String(rt.url), types: [], sessionUpdated: [], userTranscripts: [], assistantTranscripts: [],
  audioBytes: 0 };
rt.on("event", (ev) => { seen.types.push(ev.type); });
rt.on("session.updated", (ev) => { seen.sessionUpdated.push(ev.session); });
rt.on("conversation.item.input_audio_transcription.completed", (ev) => { seen.userTranscripts.push(ev.transcript); maybeDone(); });
rt.on("response.output_audio_transcript.done", (ev) => { seen.assistantTranscripts.push(ev.transcript); });
rt.on("response.output_audio.delta", (ev) => { seen.audioBytes += Buffer.from(ev.delta, "base64").length; });
rt.on("response.done", () => maybeDone());

let finished = false;
function report(code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(seen) + "\n");
  rt.close();
  setTimeout(() => process.exit(code), 50);
}
function maybeDone() {
  if (seen.types.includes("response.done") && seen.userTranscripts.length && seen.audioBytes > 0) report(0);
}
setTimeout(() => report(3), 60000);

rt.socket.on("open", async () => {
  rt.send({
    type: "session.update",
    session: {
      type: "realtime",
      instructions: INSTRUCTIONS,
      tools: [{ type: "function", name: "get_weather", description: "Get the weather for a city.",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }],
      audio: { input: { transcription: { model: "gpt-4o-mini-transcribe" },
        turn_detection: { type: "server_vad", silence_duration_ms: 500 } } },
    },
  });
  const pcm = readFileSync(pcmPath);
  const CHUNK = 4800; // 100 ms
  for (let i = 0; i < pcm.length && !finished; i += CHUNK) {
    rt.send({ type: "input_audio_buffer.append", audio: pcm.subarray(i, i + CHUNK).toString("base64") });
    await new Promise((r) => setTimeout(r, 25));
  }
  const silence = Buffer.alloc(CHUNK).toString("base64");
  while (!finished) {
    rt.send({ type: "input_audio_buffer.append", audio: silence });
    await new Promise((r) => setTimeout(r, 100));
  }
});
