"""Transports: WebSocket and WebRTC connections that feed one engine session each."""
