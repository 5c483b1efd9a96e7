"""OpenAI voice names → a local voice of the configured TTS.

Clients ask for OpenAI's voices (``marin``, ``cedar``, ...). Each TTS adapter gets a default table here:

* ``piper`` has one voice per model, so every name maps to it, with slightly different speaking rates so that
  voices are at least distinguishable;
* ``espeak`` maps each name to a distinct built-in variant (female ``+f*``, male ``+m*``);
* ``tone`` (tests) maps everything to ``tone``.

``LocalConfig.voice_map`` overrides entries (or adds new names) as ``{"marin": "en-us+f2"}``; an override may
carry a speed as ``"en-us+f2@1.1"``. An override naming a voice the TTS does not offer is a configuration error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
    "fable", "onyx", "nova",
)
"""The ten GA realtime voices plus the legacy TTS-only names ``fable``, ``onyx`` and ``nova``."""


@dataclass(frozen=True, slots=True)
class LocalVoice:
    """What to pass to ``TTSModel.synthesize``: ``voice`` (``None`` = the model's default) and a speed factor."""

    voice: str | None
    speed: float = 1.0


_PIPER_SPEED = {
    "alloy": 1.0, "ash": 0.97, "ballad": 0.92, "coral": 1.05, "echo": 0.95, "sage": 0.98, "shimmer": 1.08,
    "verse": 1.02, "marin": 1.0, "cedar": 0.95, "fable": 1.03, "onyx": 0.93, "nova": 1.06,
}
_ESPEAK = {
    "alloy": "en-us", "ash": "en-us+m3", "ballad": "en-us+m7", "coral": "en-us+f3", "echo": "en-us+m1",
    "sage": "en-us+f2", "shimmer": "en-us+f4", "verse": "en-us+m2", "marin": "en-us+f3", "cedar": "en-us+m3",
    "fable": "en+m3", "onyx": "en-us+m7", "nova": "en-us+f5",
}


def default_voices(tts_type: str, local_voices: list[str], table: Mapping[str, str] | None = None
                   ) -> dict[str, LocalVoice]:
    """The default table for a TTS adapter type, given the voices the loaded model offers (``table``: the model's
    own name → voice table, e.g. ElevenLabs' voice ids)."""
    if table:
        return {name.lower(): LocalVoice(v) for name, v in table.items()}
    if tts_type == "openai-compatible":  # OpenAI's speech endpoint knows the Realtime names itself
        return {name: LocalVoice(name) for name in OPENAI_VOICES}
    if tts_type == "espeak":
        return {name: LocalVoice(v) for name, v in _ESPEAK.items()}
    if tts_type == "piper":
        only = local_voices[0] if local_voices else None
        return {name: LocalVoice(only, speed) for name, speed in _PIPER_SPEED.items()}
    default = local_voices[0] if local_voices else None
    return {name: LocalVoice(default) for name in OPENAI_VOICES}


def _parse_override(value: str) -> LocalVoice:
    voice, sep, speed = value.partition("@")
    if not sep:
        return LocalVoice(voice.strip())
    try:
        factor = float(speed)
    except ValueError:
        raise ValueError(f"voice override {value!r}: the part after '@' must be a speed such as 1.1") from None
    if not 0.25 <= factor <= 4.0:
        raise ValueError(f"voice override {value!r}: speed must be between 0.25 and 4.0")
    return LocalVoice(voice.strip(), factor)


class VoiceMap:
    """Resolves OpenAI voice names to local voices for one TTS model."""

    def __init__(self, tts_type: str, local_voices: list[str], overrides: Mapping[str, str] | None = None,
                 model_table: Mapping[str, str] | None = None) -> None:
        self.tts_type = tts_type
        self.local_voices = list(local_voices)
        table = default_voices(tts_type, self.local_voices, model_table)
        for name, value in (overrides or {}).items():
            entry = _parse_override(value)
            if self.local_voices and entry.voice not in self.local_voices:
                raise ValueError(
                    f"voiceMap.{name}: the {tts_type} TTS has no voice {entry.voice!r}; "
                    f"it offers: {', '.join(self.local_voices)}"
                )
            table[name.lower()] = entry
        self._table = table

    def names(self) -> list[str]:
        """Accepted voice names (OpenAI's plus any added by overrides)."""
        return list(self._table)

    def resolve(self, name: str | None) -> LocalVoice:
        """Local voice for an OpenAI voice name (``None`` → ``marin``). Unknown names raise ``ValueError``."""
        key = (name or "marin").lower()
        try:
            return self._table[key]
        except KeyError:
            raise ValueError(f"unknown voice {name!r}; valid voices: {', '.join(self._table)}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._table
