"""The local realtime engine: one :class:`~voicecall.engine.session.EngineSession` per connection."""
