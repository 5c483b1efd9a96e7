// The WebSocket relay a Node user would write in front of OpenAI Realtime (express + ws 8): one upstream socket
// per client, the API key added server-side, frames forwarded verbatim both ways, client frames queued until
// upstream is open, closes propagated. `voicecall bench relay` starts it as the peer it compares the gateway with.
//
//   node relay.js --port 8081 --upstream ws://127.0.0.1:9000/v1/realtime [--key sk-...]
//
// Prints "listening <port>" once it accepts connections.
"use strict";
const http = require("http");
const express = require("express");
const { WebSocket, WebSocketServer } = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(arg("port", "8081"));
const upstreamBase = arg("upstream", "wss://api.openai.com/v1/realtime");
const model = arg("model", "gpt-realtime");
const apiKey = arg("key", process.env.OPENAI_API_KEY || "");

const app = express();
app.get("/healthz", (_req, res) => res.json({ status: "ok" }));
const server = http.createServer(app);
const wss = new WebSocketServer({ server, path: "/v1/realtime", perMessageDeflate: false, maxPayload: 16 << 20 });

function sendableCode(code) {
  return code === 1000 || (code >= 1001 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999) ? code : 1000;
}

wss.on("connection", (client) => {
  const upstream = new WebSocket(`${upstreamBase}?model=${encodeURIComponent(model)}`, {
    headers: { Authorization: `Bearer ${apiKey}` },
    perMessageDeflate: false,
    maxPayload: 16 << 20,
  });
  const pending = [];
  client.on("message", (data, isBinary) => {
    if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
    else pending.push([data, isBinary]);
  });
  upstream.on("open", () => {
    for (const [data, isBinary] of pending) upstream.send(data, { binary: isBinary });
    pending.length = 0;
  });
  upstream.on("message", (data, isBinary) => {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  });
  client.on("close", (code, reason) => {
    if (upstream.readyState === WebSocket.OPEN) upstream.close(sendableCode(code), reason);
    else upstream.terminate();
  });
  upstream.on("close", (code, reason) => {
    if (client.readyState === WebSocket.OPEN) client.close(sendableCode(code), reason);
  });
  upstream.on("error", (err) => {
    console.error(`upstream error: ${err.message}`);
    if (client.readyState === WebSocket.OPEN) client.close(1011, "upstream error");
  });
  client.on("error", () => upstream.terminate());
});

server.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
