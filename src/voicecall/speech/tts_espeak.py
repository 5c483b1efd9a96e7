"""espeak-ng TTS from the ``espeakng-loader`` wheel, through ctypes — tiny, about 1000× real time, robotic.

Set-up follows docs of the offline speech probe: the bundled library is loaded by its *absolute* path (never the
system ``libespeak-ng``), the data path given to ``espeak_Initialize`` is the directory that *contains*
``espeak-ng-data``, output is ``AUDIO_OUTPUT_SYNCHRONOUS`` through a callback, at 22 050 Hz.

Unlike the probe, the library is loaded with ``RTLD_LOCAL``: piper's ``espeakbridge`` extension embeds another
espeak-ng exporting the same symbols, and with ``RTLD_GLOBAL`` the two bind to each other's globals and the
process segfaults as soon as both adapters are used.

espeak-ng keeps global state (one voice, one callback), so every call into it is serialised by one process-wide
lock. Synthesis is done sentence by sentence, releasing the lock between sentences, so a long text does not
block other sessions; each sentence takes a few milliseconds.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .base import PCM16

SAMPLE_RATE = 22050
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_SSML = 0x10
ESPEAK_RATE = 1
ESPEAK_PITCH = 3

VOICES = (
    "en-us", "en-us+f3", "en-us+m3", "en-us+f2", "en-us+m1", "en-us+f4", "en-us+m7", "en-us+f1",
    "en-us+m2", "en-us+f5", "en", "en+f3", "en+m3",
)
"""Voices offered by default: US/UK English with a few of espeak's built-in variants."""

_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")

_CallbackType = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakLib:
    """The one espeak-ng instance of the process (espeak has global state)."""

    def __init__(self) -> None:
        import espeakng_loader

        lib_path = Path(espeakng_loader.get_library_path()).resolve()
        data_parent = Path(espeakng_loader.get_data_path()).resolve().parent
        lib = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_LOCAL)  # absolute path; LOCAL: see module doc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CallbackType]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_parent).encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {data_parent})")
        self.sample_rate = int(rate)
        self.variants = frozenset(p.name for p in (data_parent / "espeak-ng-data" / "voices" / "!v").iterdir())
        self.lib = lib
        self.lock = threading.Lock()
        self._chunks: list[PCM16] = []
        self._cb = _CallbackType(self._on_audio)  # keep a reference: espeak holds the pointer
        lib.espeak_SetSynthCallback(self._cb)
        self._voice: str | None = None
        self._rate: int | None = None

    def _on_audio(self, wav: ctypes._Pointer, n: int, events: int) -> int:  # type: ignore[type-arg]
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 1 would abort synthesis

    def speak(self, text: str, voice: str, wpm: int, ssml: bool = False) -> PCM16:
        """Synthesize one piece of text (call with :attr:`lock` held); ``ssml``: the text may hold SSML tags
        such as ``<break time="800ms"/>`` (a pause inside a sentence, its melody going on after it)."""
        if voice != self._voice:
            variant = voice.partition("+")[2]
            if (variant and variant not in self.variants) or self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                self._voice = None
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._voice, self._rate = voice, None  # a voice change resets the rate
        if wpm != self._rate:
            self.lib.espeak_SetParameter(ESPEAK_RATE, wpm, 0)
            self._rate = wpm
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        flags = ESPEAK_CHARS_UTF8 | (ESPEAK_SSML if ssml else 0)
        err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, flags, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


_LIB: _EspeakLib | None = None
_LIB_LOCK = threading.Lock()


def _espeak() -> _EspeakLib:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            _LIB = _EspeakLib()
        return _LIB


class EspeakTTS:
    """espeak-ng text-to-speech (all instances share the one espeak of the process).

    Options: ``wpm`` (words per minute at speed 1.0, default 175), ``defaultVoice`` (``en-us``).
    ``speed`` scales ``wpm`` (clamped to 80–450).
    """

    name = "espeak"

    def __init__(self, wpm: int = 175, default_voice: str = "en-us") -> None:
        self._lib = _espeak()
        self.sample_rate = self._lib.sample_rate
        self.wpm = int(wpm)
        self.default_voice = default_voice
        with self._lib.lock:  # check the voice now rather than at the first turn
            self._lib.speak("", default_voice, self.wpm)

    def voices(self) -> list[str]:
        return list(VOICES)

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        """Yield int16 audio sentence by sentence (a few ms each)."""
        voice = voice or self.default_voice
        wpm = int(min(450, max(80, round(self.wpm * speed))))
        for sentence in _SENTENCE.split(text.strip()):
            if not sentence:
                continue
            with self._lib.lock:
                pcm = self._lib.speak(sentence, voice, wpm)
            if pcm.size:
                yield pcm

    def warm_up(self) -> None:
        for _ in self.synthesize("Hi."):
            pass
