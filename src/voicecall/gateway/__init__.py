"""The OpenAI gateway (provider ``openai-realtime``): this server stands between clients and OpenAI and the
OpenAI API key never leaves it.

* :mod:`voicecall.gateway.secrets` — ``POST /v1/realtime/client_secrets`` and ``POST /session`` mint ``ek_`` client
  secrets upstream, with the session the *server* decides.
* :mod:`voicecall.gateway.relay` — ``GET /v1/realtime`` (WebSocket) relayed frame by frame to OpenAI.
* :mod:`voicecall.gateway.calls` — ``POST /v1/realtime/calls``: the browser's SDP offer is forwarded to OpenAI
  (multipart ``sdp`` + ``session``, with the server key); media then flows browser <-> OpenAI directly, and this
  server joins the call on a "sideband" WebSocket to record it and enforce limits.
* :mod:`voicecall.gateway.upstream` — URLs, the key header, timeouts, error mapping and redaction shared by the
  three.
* :mod:`voicecall.gateway.policy` — which session fields a client may set.

See ``docs/gateway.md``.
"""
