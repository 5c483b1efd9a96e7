"""The ``voicecall`` command: serve, talk, bench, history."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from voicecall import __version__


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML configuration file (default: $VOICECALL_CONFIG, else built-in "
                   "defaults); environment variables override it, see docs/configuration.md")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from voicecall.config import ConfigError, load_config
    from voicecall.server.app import create_app, uvicorn_options

    overrides = {}
    if args.host:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = args.port
    try:
        cfg = load_config(args.config, overrides=overrides, strict=args.strict_config)
    except ConfigError as exc:
        print(f"voicecall: {exc}", file=sys.stderr)
        return 2
    if cfg.voice_call.provider == "local":
        from voicecall.speech.registry import check_stages

        try:  # stage types, options and API keys, before anything loads or listens
            check_stages(cfg.voice_call.local)
        except ConfigError as exc:
            print(f"voicecall: invalid configuration: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("voicecall")
    for warning in cfg.warnings:
        log.warning("%s", warning)
    if cfg.server.host not in ("127.0.0.1", "localhost", "::1") and not cfg.server.api_keys:
        log.warning("listening on %s with no server.apiKeys: anyone who can reach this port can use it",
                    cfg.server.host)
    log.info("voicecall %s, provider %s, on %s://%s:%d/", __version__, cfg.voice_call.provider,
             "https" if cfg.server.tls_cert_file else "http", cfg.server.host,
             cfg.server.port)
    app = create_app(cfg)
    from voicecall.cluster.drain import DrainingServer

    server = DrainingServer(uvicorn.Config(app, host=cfg.server.host, port=cfg.server.port,
                                           log_level=cfg.server.log_level, **uvicorn_options(cfg)), app.state.vc)
    server.run()
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    from voicecall.talk import talk

    try:
        result = asyncio.run(talk(args.file, url=args.url, out=args.out, api_key=args.api_key, voice=args.voice,
                                  instructions=args.instructions, realtime=args.realtime, timeout=args.timeout))
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"voicecall talk: {exc}", file=sys.stderr)
        return 1
    print(f"you said:  {result.user_transcript or '(no transcript)'}")
    print(f"answer:    {result.answer_transcript}")
    print(f"audio:     {result.audio_seconds:.2f} s" + (f" -> {args.out}" if args.out else ""))
    if result.first_audio_ms is not None:
        print(f"first answer audio {result.first_audio_ms:.0f} ms after the end of the recording")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicecall", description="Realtime voice-to-voice server speaking the OpenAI "
                                     "Realtime GA protocol (WebSocket and WebRTC), on a local offline engine or as a "
                                     "gateway to OpenAI.")
    parser.add_argument("--version", action="version", version=f"voicecall {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server", description="Run the server (web page at /, WebSocket at "
                       "/v1/realtime, WebRTC at /v1/realtime/calls).")
    _add_config_args(p)
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, or server.host)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080, or server.port)")
    p.add_argument("--strict-config", action="store_true", help="refuse seed-era values (beta-era model names such "
                   "as gpt-4o-realtime-preview, TTS-only voices fable/onyx/nova) instead of mapping them to current ones "
                   "with a warning")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("talk", help="send a recording as a user turn and save the spoken reply",
                       description="Send FILE.wav (16-bit PCM, any rate, mono or stereo) to a running server as one user "
                       "turn, print both sides' words, and save the spoken reply.")
    p.add_argument("file", metavar="FILE.wav")
    p.add_argument("--url", default="ws://127.0.0.1:8080/v1/realtime", help="server WebSocket URL "
                   "(default ws://127.0.0.1:8080/v1/realtime)")
    p.add_argument("--out", metavar="REPLY.wav", help="write the reply audio here (24 kHz mono)")
    p.add_argument("--api-key", default=None, help="server API key, if the server requires one (default "
                   "$VOICECALL_API_KEY)")
    p.add_argument("--voice", default=None, help="voice for the reply (e.g. marin)")
    p.add_argument("--instructions", default=None, help="instructions for this session")
    p.add_argument("--realtime", action="store_true", help="stream at real-time pace and let the server's VAD end the "
                   "turn (default: send at once and commit)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply (default 60)")
    p.set_defaults(func=cmd_talk)

    from voicecall.bench.cli import add_bench_parser

    add_bench_parser(sub)
    try:
        from voicecall.store.cli import add_history_parser

        add_history_parser(sub)
    except ImportError:  # pragma: no cover - store not installed
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
