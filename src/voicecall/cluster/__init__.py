"""Running several replicas of voicecall behind a load balancer.

* :mod:`.signing` — self-contained ``ek_`` client secrets any replica can verify (HMAC, key rotation).
* :mod:`.state` — limits shared by every replica: concurrent sessions, mint rate, spend (in-process or Redis),
  replica heartbeats and which replica owns a WebRTC call.
* :mod:`.forward` — a request for a call another replica owns is forwarded to it (hangup, sideband).
* :mod:`.drain` — readiness and graceful drain on SIGTERM.
* :mod:`.metrics` — Prometheus metrics of one replica.

With no ``state.url`` everything stays in this process, as on a single machine.
"""
