"""``voicecall bench answers``: are the LLM's answers worth hearing, and does it call tools when it should?

For each LLM configuration (``--llm LABEL=JSON``, a ``local.llm`` stage object; several compare side by side):

* **answers** and **heldout**: two sets of 45 spoken-assistant questions of :mod:`voicecall.bench.answer_set`
  (the second never used to choose a prompt), each asked in a fresh conversation with the server's default
  instructions. An answer passes when it contains every key fact (any
  accepted spelling) once the engine's tool-markup filter has run, i.e. what a user would hear.
* **tools** (``--set tools`` or ``all``): 20 questions that need one of 4 declared functions and 20 that need none,
  with ``tool_choice: auto``: call rate (the right function called), wrong-function calls, false calls.
* **results** (with tools): after ``function_call_output``, does the answer put the result into words, without
  markup?

Each configuration runs in its own process (llama.cpp contexts built with different options must not share a
process: their OpenMP teams halve each other's speed). Prints per-question pass/fail, % correct, time to first
token; writes JSON and a plot comparing the configurations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import time
from pathlib import Path
from typing import Any

from voicecall.bench.answer_set import ANSWERS, HELDOUT, TOOL_QUESTIONS, TOOL_RESULT_CASES, TOOLS, Question
from voicecall.bench.common import machine_info, parse_stage_spec, progress, report, summary

QUESTION_SETS: dict[str, list[Question]] = {"answers": ANSWERS, "heldout": HELDOUT}
"""Question sets scored by key facts: ``answers`` (tuned on) and ``heldout`` (never used to choose a prompt)."""

DEFAULT_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("smollm2-qa (default)", {"type": "llama-cpp"}),
    ("smollm2-chat-template", {"type": "llama-cpp", "promptStyle": "chat"}),
]


def passes(answer: str, facts: tuple[tuple[str, ...], ...]) -> bool:
    low = answer.lower()
    return all(any(re.search(r"(?<![\w])" + re.escape(s.lower()) + r"(?![\w])", low) for s in group)
               for group in facts)


def has_markup(text: str) -> bool:
    return bool(re.search(r"<\/?\|?[A-Za-z_]|[{}]", text))


async def _ask(llm: Any, messages: list[Any], **kw: Any) -> dict[str, Any]:
    from voicecall.engine.markup import ToolMarkupFilter
    from voicecall.speech.base import LLMUsage, TextDelta, ToolCallDelta

    flt = ToolMarkupFilter()
    raw: list[str] = []
    heard: list[str] = []
    calls: list[str] = []
    t0 = time.perf_counter()
    first: float | None = None
    usage = LLMUsage()
    async for chunk in llm.stream_chat(messages, **kw):
        if isinstance(chunk, TextDelta | ToolCallDelta) and first is None:
            first = time.perf_counter() - t0
        if isinstance(chunk, TextDelta):
            raw.append(chunk.text)
            heard.append(flt.feed(chunk.text))
        elif isinstance(chunk, ToolCallDelta) and chunk.name:
            calls.append(chunk.name)
        elif isinstance(chunk, LLMUsage):
            usage = chunk
    heard.append(flt.flush())
    return {"raw": "".join(raw), "answer": " ".join("".join(heard).split()), "calls": calls,
            "ttft_ms": None if first is None else first * 1000, "total_ms": (time.perf_counter() - t0) * 1000,
            "output_tokens": usage.output_tokens}


def evaluate(label: str, stage: dict[str, Any], sets: list[str], limit: int | None) -> dict[str, Any]:
    """Run the sets against one LLM configuration (in this process)."""
    from voicecall.config import LocalConfig, StageConfig
    from voicecall.speech.base import ChatMessage, FunctionTool
    from voicecall.speech.registry import load_stage

    llm = load_stage("llm", StageConfig(**stage))
    if hasattr(llm, "warm_up"):
        llm.warm_up()
    system = ChatMessage("system", LocalConfig().instructions)
    tools = [FunctionTool(t["name"], t["description"], t["parameters"]) for t in TOOLS]
    out: dict[str, Any] = {"label": label, "stage": stage, "model": getattr(llm, "model_label", llm.name)}

    async def run() -> None:
        for name, questions in QUESTION_SETS.items():
            if name not in sets:
                continue
            rows = []
            for qn in questions[:limit]:
                r = await _ask(llm, [system, ChatMessage("user", qn.text)])
                r.update(question=qn.text, passed=passes(r["answer"], qn.facts) and not has_markup(r["answer"]))
                rows.append(r)
                progress(f"[{label}] {name} {'PASS' if r['passed'] else 'FAIL'} {qn.text!r} -> {r['answer']!r}")
            out[name] = rows
        if "tools" in sets:
            rows = []
            for tq in TOOL_QUESTIONS[: limit and 2 * limit]:
                r = await _ask(llm, [system, ChatMessage("user", tq.text)], tools=tools, tool_choice="auto")
                called = r["calls"][0] if r["calls"] else None
                r.update(question=tq.text, expected=tq.tool, called=called, markup=has_markup(r["answer"]))
                rows.append(r)
                progress(f"[{label}] tools {tq.text!r}: expected {tq.tool}, called {called}"
                         + ("" if called else f", said {r['answer']!r}"))
            out["tools"] = rows
            rows = []
            for i, (question, name, args, result, facts) in enumerate(TOOL_RESULT_CASES):
                call = {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
                msgs = [system, ChatMessage("user", question), ChatMessage("assistant", None, tool_calls=[call]),
                        ChatMessage("tool", result, tool_call_id=f"call_{i}")]
                r = await _ask(llm, msgs, tools=tools, tool_choice="auto")
                r.update(question=question, result=result,
                         passed=passes(r["answer"], facts) and not has_markup(r["answer"]) and not r["calls"])
                rows.append(r)
                progress(f"[{label}] result {'PASS' if r['passed'] else 'FAIL'} {result} -> {r['answer']!r}")
            out["results"] = rows

    asyncio.run(run())
    return out


def _child(label: str, stage: dict[str, Any], sets: list[str], limit: int | None, conn: Any) -> None:
    try:
        conn.send(evaluate(label, stage, sets, limit))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        conn.send({"label": label, "stage": stage, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def scores(res: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for name in QUESTION_SETS:
        if res.get(name):
            rows = res[name]
            prefix = "" if name == "answers" else name + "_"
            s[prefix + "correct_pct"] = 100.0 * sum(r["passed"] for r in rows) / len(rows)
            s[prefix + "n_questions"] = len(rows)
    timed = [r for name in QUESTION_SETS for r in res.get(name) or []]
    if timed:
        s["ttft_ms"] = summary([r["ttft_ms"] for r in timed])
        s["answer_ms"] = summary([r["total_ms"] for r in timed])
    if res.get("tools"):
        need = [r for r in res["tools"] if r["expected"]]
        none = [r for r in res["tools"] if not r["expected"]]
        s["tool_call_pct"] = 100.0 * sum(r["called"] == r["expected"] for r in need) / max(1, len(need))
        s["wrong_tool_pct"] = 100.0 * sum(bool(r["called"]) and r["called"] != r["expected"] for r in need) / max(1, len(need))
        s["false_call_pct"] = 100.0 * sum(bool(r["called"]) for r in none) / max(1, len(none))
        s["markup_spoken"] = sum(r["markup"] for r in res["tools"])
        s["n_tool_questions"], s["n_no_tool_questions"] = len(need), len(none)
    if res.get("results"):
        s["result_in_words_pct"] = 100.0 * sum(r["passed"] for r in res["results"]) / len(res["results"])
    return s


def print_table(data: dict[str, Any]) -> None:
    print(f"{'configuration':34} {'correct':>8} {'held-out':>9} {'TTFT p50':>9} {'answer p50':>11} {'tool calls':>11} "
          f"{'false calls':>12} {'result said':>12}")
    for res in data["configs"]:
        if "error" in res:
            print(f"{res['label']:34} ERROR {res['error']}")
            continue
        s = res["scores"]

        def pct(key: str, s: dict[str, Any] = s) -> str:
            return f"{s[key]:.0f} %" if key in s else "-"

        ttft = s.get("ttft_ms", {}).get("p50")
        ans = s.get("answer_ms", {}).get("p50")
        print(f"{res['label']:34} {pct('correct_pct'):>8} {pct('heldout_correct_pct'):>9} {f'{ttft:.0f} ms' if ttft else '-':>9} "
              f"{f'{ans:.0f} ms' if ans else '-':>11} {pct('tool_call_pct'):>11} {pct('false_call_pct'):>12} "
              f"{pct('result_in_words_pct'):>12}")


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    configs = [c for c in data["configs"] if "scores" in c]
    labels = [c["label"] for c in configs]
    metrics = [("correct_pct", "answers correct"), ("heldout_correct_pct", "held-out answers correct"), ("tool_call_pct", "tool questions: called"),
               ("false_call_pct", "no-tool questions: false calls"), ("result_in_words_pct", "result said in words")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 1.3]})
    x = np.arange(len(labels))
    width = 0.8 / len(metrics)
    for k, (key, name) in enumerate(metrics):
        vals = [c["scores"].get(key, np.nan) for c in configs]
        bars = ax.bar(x + (k - (len(metrics) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.axhline(80, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, labels, fontsize=8, rotation=10)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("answer quality and tool use")
    ax.legend(fontsize=7, loc="upper right")
    ttft = [c["scores"].get("ttft_ms", {}).get("p50") or np.nan for c in configs]
    total = [c["scores"].get("answer_ms", {}).get("p50") or np.nan for c in configs]
    ax2.bar(x - 0.2, ttft, 0.4, label="first token p50")
    ax2.bar(x + 0.2, total, 0.4, label="whole answer p50")
    ax2.set_xticks(x, labels, fontsize=7, rotation=20)
    ax2.set_ylabel("ms")
    ax2.set_title("latency per question")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    configs = [parse_stage_spec(s, "--llm") for s in args.llm] if args.llm else DEFAULT_CONFIGS
    sets = {"all": ["answers", "heldout", "tools"], "questions": ["answers", "heldout"]}.get(args.set, [args.set])
    ctx = multiprocessing.get_context("spawn")
    results = []
    for label, stage in configs:
        progress(f"== {label}: {json.dumps(stage)}")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(label, stage, sets, args.limit, child))
        proc.start()
        child.close()
        res = parent.recv()
        proc.join()
        if "error" not in res:
            res["scores"] = scores(res)
        results.append(res)
    data = {"bench": "answers", "sets": sets, "configs": results, "machine": machine_info()}
    return report(data, args.out, print_table, plot)
