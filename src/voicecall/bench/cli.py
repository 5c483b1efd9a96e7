"""``voicecall bench`` sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def _append_ms_in_a_round(value: str) -> int:
    """``bench relay --append-ms``: the benchmark runs in 1 s rounds, so at least one append per round."""
    ms = int(value)
    if not 1 <= ms <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1-1000 ms (the benchmark runs in 1 s rounds), got {ms}")
    return ms


def json_out(value: str) -> str:
    """A benchmark's ``--out``: the JSON file (its plot goes beside it), refused before the run if it is a folder."""
    if Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder: give the JSON file to write (the plot goes beside it)")
    return value


def add_bench_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks (print figures, write JSON and a plot)",
                       description="Benchmarks. Each prints its figures and writes them to a JSON file.")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")

    b = bsub.add_parser("latency", help="voice-to-voice latency of complete spoken turns",
                        description="Stream recorded utterances in real time to a server and measure, per run and as "
                        "p50/p95, last speech sample -> first answer audio, and its parts (end-of-turn wait, STT final, "
                        "LLM first token, TTS first audio).")
    b.add_argument("--url", default=None, help="server WebSocket URL; default: start an in-process server on a free "
                   "loopback port with the embedded default stack")
    b.add_argument("--config", default=None, help="configuration for the in-process server")
    b.add_argument("--runs", type=int, default=10, help="number of turns (default 10)")
    b.add_argument("--transport", choices=["websocket", "webrtc"], default="websocket")
    b.add_argument("--out", type=json_out, default="bench-results/latency.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.add_argument("--stt-processes", type=int, default=None, metavar="N",
                   help="run pocketsphinx in N worker processes (stt.processes; 0: in the server process)")
    b.add_argument("--stt", default=None, metavar="TYPE",
                   help="STT of the in-process server (whisper, moonshine, pocketsphinx; default: the configured one)")
    b.set_defaults(func=_run("voicecall.bench.latency"))

    b = bsub.add_parser("sessions", help="concurrent sessions with audio flowing",
                        description="Open N concurrent sessions streaming audio in real time and check that every one "
                        "keeps up (no underruns, answers arrive).")
    b.add_argument("--url", default=None)
    b.add_argument("--config", default=None)
    b.add_argument("--transport", choices=["websocket", "webrtc"], default="websocket")
    b.add_argument("--sessions", type=int, nargs="+", default=[1, 4], help="session counts to try (default 1 4)")
    b.add_argument("--seconds", type=float, default=20.0, help="length of each trial (default 20)")
    b.add_argument("--out", type=json_out, default="bench-results/sessions.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.add_argument("--stt-processes", type=int, default=None, metavar="N",
                   help="run pocketsphinx in N worker processes (stt.processes; 0: in the server process)")
    b.set_defaults(func=_run("voicecall.bench.sessions"))

    b = bsub.add_parser("appends", help="the local engine's WebSocket receive path at 50 appends/s per session",
                        description="N sessions stream input_audio_buffer.append in real time (no turns) to one "
                        "local-engine server process; prints appends handled per second, lag, and the server's CPU per "
                        "session and per append.")
    b.add_argument("--sessions", type=int, nargs="+", default=[10, 50, 100], help="session counts (default 10 50 100)")
    b.add_argument("--seconds", type=float, default=10.0, help="streaming time per count (default 10)")
    b.add_argument("--append-ms", type=int, default=20, metavar="MS", help="audio per append (default 20)")
    b.add_argument("--config", default=None, help="server configuration: echo (default), embedded or a YAML file")
    b.add_argument("--out", type=json_out, default="bench-results/appends.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.appends"))

    b = bsub.add_parser("stages", help="each speech stage alone (VAD, STT, LLM, TTS)")
    b.add_argument("--out", type=json_out, default="bench-results/stages.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.speech_stages"))

    b = bsub.add_parser("stt", help="WER and decode time of every STT engine on a test set built from our TTS voices",
                        description="Word error rate and decode time of whisper, whisper-30s, moonshine and "
                        "pocketsphinx side by side on 100 clips (20 questions x 5 voices: Piper and espeak-ng) with a "
                        "noise floor, streaming cost, and noise reduction (RNNoise) on clean and 5 dB SNR clips.")
    from voicecall.bench.stt import add_arguments

    add_arguments(b)
    b.set_defaults(func=_run("voicecall.bench.stt"))

    b = bsub.add_parser("turns", help="end of turn (cut-offs, dead air) and false interruptions, labelled set",
                        description="Build a labelled set of turns (espeak-ng voices: complete questions, the same cut "
                        "by 0.5-1.5 s mid-sentence pauses, backchannels, noises and real interruptions during answers) "
                        "and report, for server_vad and each semantic_vad eagerness, the false cut-off rate and the dead "
                        "air after true ends (p50/p95), plus the false-interruption rate.")
    b.add_argument("--url", default=None, help="server WebSocket URL; default: an in-process server")
    b.add_argument("--config", default=None, help="configuration for the in-process server")
    b.add_argument("--questions", type=int, default=10, help="questions per voice (default 10, at most 10)")
    b.add_argument("--voices", type=int, default=3, help="espeak-ng voices (default 3)")
    b.add_argument("--skip-eot", action="store_true", help="only the interruption part")
    b.add_argument("--skip-interruptions", action="store_true", help="only the end-of-turn part")
    b.add_argument("--settings", default="server_vad,high,auto,low", metavar="LIST",
                   help="turn-detection settings to measure, streamed at once (comma-separated: server_vad, high, auto, "
                   "low; default all four; one alone loads the machine as one user would)")
    b.add_argument("--v2v", type=int, default=6, metavar="N",
                   help="complete questions answered per setting to time voice-to-voice (WebSocket); 0: skip")
    b.add_argument("--barge-in", type=int, default=8, metavar="N",
                   help="real interruptions over WebRTC to time (speech onset -> answer silent at the client); 0: skip")
    b.add_argument("--out", type=json_out, default="bench-results/turns.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.turns"))

    b = bsub.add_parser("answers", help="answer quality and tool use of LLM configurations",
                        description="Ask the labelled question sets (2 x 45 spoken-assistant questions with key facts; "
                        "40 tool / no-tool questions; 4 function results) to one or more LLM configurations and "
                        "print per-question pass/fail, the share correct, time to first token, tool-call and false-call "
                        "rates; writes JSON and a plot comparing them.")
    b.add_argument("--llm", action="append", metavar="LABEL=JSON",
                   help='an LLM stage to measure, e.g. \'qwen={"type": "llama-cpp", "modelPath": "/m/qwen.gguf"}\' '
                   'or \'ollama={"type": "openai-compatible", "baseUrl": "http://127.0.0.1:11434/v1", '
                   '"model": "qwen2.5:1.5b"}\' (repeat to compare; default: the embedded model with the qa prompt '
                   'and with its chat template)')
    b.add_argument("--set", choices=["answers", "heldout", "questions", "tools", "all"], default="all",
                   help="which sets: answers (45 questions), heldout (45 others, never tuned on), questions (both), tools (default all)")
    b.add_argument("--limit", type=int, default=None, help="only the first N questions of each set (smoke test)")
    b.add_argument("--out", type=json_out, default="bench-results/answers.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.answers"))

    b = bsub.add_parser("relay", help="what the OpenAI relay adds (CPU per message, latency), side by side with a "
                        "Node ws relay",
                        description="Clients stream audio appends to a local echo upstream directly, through the "
                        "voicecall gateway (history on) and through a compared relay, in alternating 1 s rounds of "
                        "one run; prints round-trip p50/p99/p99.9/max per mode, the latency each relay adds and each "
                        "relay process's CPU (per message and as a share of one core).")
    b.add_argument("--clients", type=int, default=100, help="concurrent clients per mode (default 100)")
    b.add_argument("--seconds", type=float, default=10.0, help="measured seconds per mode (default 10)")
    b.add_argument("--append-ms", type=_append_ms_in_a_round, default=20, metavar="MS",
                   help="audio per append and interval between appends, 1-1000 (default 20: 50 messages/s per "
                        "client, as browsers and the SDKs send)")
    b.add_argument("--compare", default=None, metavar="node|URL|none",
                   help="the relay to compare with: 'node' starts bench/node-relay (express + ws 8; the default when "
                        "Node.js is installed), a ws:// URL uses a relay you run (point it at the echo upstream, see "
                        "--upstream-port), 'none' compares with nothing")
    b.add_argument("--upstream-port", type=int, default=None, metavar="PORT",
                   help="port of the echo upstream on 127.0.0.1 (default: a free one), for a --compare URL relay")
    b.add_argument("--history", choices=["on", "off"], default="on",
                   help="the gateway records conversations in SQLite (default on, as deployed)")
    b.add_argument("--realtime", action="store_true",
                   help="run the benchmark's processes under SCHED_RR (needs root): on a machine busy with other work "
                        "the only way to measure sub-millisecond latencies")
    b.add_argument("--idle", type=int, default=None, metavar="N",
                   help="instead of streaming: open N silent sessions per relay (one first event each) and report "
                        "each relay process's CPU per idle session per second, measured over --seconds with no "
                        "session and then with the N sessions (30 s windows recommended: keepalive pings are 15-20 s "
                        "apart)")
    b.add_argument("--out", type=json_out, default="bench-results/relay.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not give the relays a CPU of their own (by default they share one, and the load generator "
                        "and the echo upstream share the rest, as on separate machines)")
    b.set_defaults(func=_run("voicecall.bench.relay"))

    b = bsub.add_parser("cluster", help="replicas behind HAProxy with Redis: what the balancer and shared limits add",
                        description="Start redis-server, N voicecall replicas (echo stack) and HAProxy on loopback; "
                        "measure session start and a text turn straight to a replica vs through the balancer, with "
                        "state.url memory vs Redis, and concurrent sessions through the balancer. Needs Debian's "
                        "redis-server and haproxy.")
    b.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3], help="replica counts (default 1 2 3)")
    b.add_argument("--rounds", type=int, default=20, help="sessions per path and configuration (default 20)")
    b.add_argument("--sessions", type=int, default=12, help="concurrent sessions through the balancer (default 12)")
    b.add_argument("--out", type=json_out, default="bench-results/cluster.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.cluster"))

    b = bsub.add_parser("cost", help="what a scripted call costs through each configuration (docs/cost.md)",
                        description="Replay a scripted call through OpenAI Realtime (via the gateway), Claude + "
                        "Deepgram + ElevenLabs, an OpenAI pipeline and the embedded stack (cloud services: local "
                        "stand-ins of their wire protocols), measure what each would bill and price it.")
    b.add_argument("--minutes", type=float, default=10.0, help="call length to price (default 10)")
    b.add_argument("--configs", nargs="+", default=["realtime", "claude", "openai", "local"],
                   choices=["realtime", "claude", "openai", "local"])
    b.add_argument("--out", type=json_out, default="bench-results/cost.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.cost"))


    b = bsub.add_parser("soak", help="N sessions for M minutes, normal and hostile clients mixed: server memory over "
                        "time, sessions completed, errors",
                        description="Run N client slots for M minutes against one server process: normal sessions "
                        "(three answered turns each) and hostile ones (flooding without reading, malformed and deep "
                        "events, silent sockets, slowloris headers, vanishing mid-answer). Prints the server's RSS "
                        "over time, sessions completed and failed per kind, unexpected outcomes; writes JSON and a "
                        "plot.")
    b.add_argument("--sessions", type=int, default=8, help="concurrent client slots (default 8)")
    b.add_argument("--minutes", type=float, default=2.0, help="length of the soak (default 2)")
    b.add_argument("--hostile-share", type=float, default=0.5, help="share of slots that are hostile (default 0.5)")
    b.add_argument("--config", default=None, help="server configuration: echo (default), embedded or a YAML file")
    b.add_argument("--out", type=json_out, default="bench-results/soak.json", metavar="FILE", help="JSON output file; the plot goes beside it")
    b.set_defaults(func=_run("voicecall.bench.soak"))


def _run(module: str):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        import importlib

        mod = importlib.import_module(module)
        return int(mod.run(args) or 0)

    return run
