"""voicecall: a self-hostable realtime voice-to-voice server speaking the OpenAI Realtime GA protocol."""

__version__ = "0.1.0"
