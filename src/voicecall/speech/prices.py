"""What a pipeline call costs: a price table per provider and model, and the cost of one response split by stage.

Each cloud adapter has a ``billing`` key, ``<vendor>/<model>`` (``deepgram/nova-3``, ``anthropic/claude-haiku-4-5``,
``elevenlabs/eleven_flash_v2_5``, ``openai/gpt-4o-mini-transcribe``; an OpenAI-compatible adapter that does not
talk to api.openai.com is ``openai-compatible/<model>``). A price has up to four parts, each USD:

* ``perMinute`` — per minute of audio: STT input (what the recogniser was sent), or TTS output;
* ``per1kChars`` — per 1 000 characters of text sent to a TTS;
* ``inputPerMTok`` / ``outputPerMTok`` — per million LLM tokens in / out.

Keys resolve as: the exact key, else without a trailing snapshot date (``-20251001``, ``-2025-10-01``) or
``-latest``. Anything not in the table (models on this machine, unknown names) costs 0 and is reported as
unpriced. ``local.prices`` in the configuration overrides or adds entries, e.g.
``{"deepgram/nova-3": {perMinute: 0.0077}}``.

The defaults come from the vendors' public price pages; each entry says which page and when the figure was
read (``asOf``). Prices change: check them, and override what your contract says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .base import Served


@dataclass(frozen=True, slots=True)
class StagePrice:
    per_minute: float = 0.0
    per_1k_chars: float = 0.0
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    source: str = ""
    as_of: str = ""


_ANTHROPIC = "https://www.anthropic.com/pricing#api"
_DEEPGRAM = "https://deepgram.com/pricing (pay as you go, streaming)"
_ELEVEN = "https://elevenlabs.io/pricing/api"
_OPENAI = "https://openai.com/api/pricing"

DEFAULT_STAGE_PRICES: dict[str, StagePrice] = {
    # LLMs
    "anthropic/claude-haiku-4-5": StagePrice(input_per_mtok=1.0, output_per_mtok=5.0, source=_ANTHROPIC,
                                             as_of="2025-10"),
    "anthropic/claude-sonnet-4-5": StagePrice(input_per_mtok=3.0, output_per_mtok=15.0, source=_ANTHROPIC,
                                              as_of="2025-09"),
    "anthropic/claude-opus-4-1": StagePrice(input_per_mtok=15.0, output_per_mtok=75.0, source=_ANTHROPIC,
                                            as_of="2025-08"),
    "anthropic/claude-3-5-haiku": StagePrice(input_per_mtok=0.80, output_per_mtok=4.0, source=_ANTHROPIC,
                                             as_of="2024-11"),
    "openai/gpt-4o-mini": StagePrice(input_per_mtok=0.15, output_per_mtok=0.60, source=_OPENAI, as_of="2024-07"),
    "openai/gpt-4.1-mini": StagePrice(input_per_mtok=0.40, output_per_mtok=1.60, source=_OPENAI, as_of="2025-04"),
    "openai/gpt-4.1-nano": StagePrice(input_per_mtok=0.10, output_per_mtok=0.40, source=_OPENAI, as_of="2025-04"),
    "openai/gpt-4o": StagePrice(input_per_mtok=2.50, output_per_mtok=10.0, source=_OPENAI, as_of="2024-10"),
    # STT (per minute of audio sent)
    "deepgram/nova-3": StagePrice(per_minute=0.0077, source=_DEEPGRAM, as_of="2025-03"),
    "deepgram/nova-2": StagePrice(per_minute=0.0058, source=_DEEPGRAM, as_of="2025-03"),
    "openai/gpt-4o-mini-transcribe": StagePrice(per_minute=0.003, source=_OPENAI, as_of="2025-03"),
    "openai/gpt-4o-transcribe": StagePrice(per_minute=0.006, source=_OPENAI, as_of="2025-03"),
    "openai/whisper-1": StagePrice(per_minute=0.006, source=_OPENAI, as_of="2023-03"),
    # TTS
    "elevenlabs/eleven_flash_v2_5": StagePrice(per_1k_chars=0.05, source=_ELEVEN, as_of="2025-06"),
    "elevenlabs/eleven_flash_v2": StagePrice(per_1k_chars=0.05, source=_ELEVEN, as_of="2025-06"),
    "elevenlabs/eleven_turbo_v2_5": StagePrice(per_1k_chars=0.05, source=_ELEVEN, as_of="2025-06"),
    "elevenlabs/eleven_multilingual_v2": StagePrice(per_1k_chars=0.10, source=_ELEVEN, as_of="2025-06"),
    "elevenlabs/eleven_v3": StagePrice(per_1k_chars=0.10, source=_ELEVEN, as_of="2025-06"),
    # gpt-4o-mini-tts is billed per token ($0.60/M text in, $12/M audio out); OpenAI's own estimate: $0.015/minute.
    "openai/gpt-4o-mini-tts": StagePrice(per_minute=0.015, source=_OPENAI, as_of="2025-03"),
    "openai/tts-1": StagePrice(per_1k_chars=0.015, source=_OPENAI, as_of="2023-11"),
    "openai/tts-1-hd": StagePrice(per_1k_chars=0.030, source=_OPENAI, as_of="2023-11"),
}

PRICE_FIELDS = {"perMinute": "per_minute", "per1kChars": "per_1k_chars", "inputPerMTok": "input_per_mtok",
                "outputPerMTok": "output_per_mtok"}
_SUFFIX = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-latest)$")


class StagePrices:
    """The default table plus ``local.prices`` overrides (``ValueError`` for a bad override)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        table = dict(DEFAULT_STAGE_PRICES)
        for key, values in (overrides or {}).items():
            if not isinstance(values, Mapping):
                raise ValueError(f"local.prices.{key} must be a mapping of {', '.join(PRICE_FIELDS)} to USD")  # noqa: TRY004 - a configuration error
            checked: dict[str, Any] = {}
            for name, value in values.items():
                if name not in PRICE_FIELDS:
                    raise ValueError(f"local.prices.{key}: unknown price {name!r}; use {', '.join(PRICE_FIELDS)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"local.prices.{key}.{name} must be a number >= 0 (USD)")
                checked[PRICE_FIELDS[name]] = float(value)
            table[key] = replace(table.get(key, StagePrice()), source="configuration (local.prices)", as_of="",
                                 **checked)
        self._table = table

    def get(self, billing: str | None) -> StagePrice | None:
        if not billing:
            return None
        return self._table.get(billing) or self._table.get(_SUFFIX.sub("", billing))

    def table(self) -> dict[str, StagePrice]:
        return dict(self._table)


@dataclass(slots=True)
class StageUse:
    """What one stage consumed for one response, per provider that served it."""

    audio_seconds: float = 0.0
    characters: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


def stage_cost(prices: StagePrices, served: Served, use: StageUse) -> tuple[float, bool]:
    """``(usd, priced)`` for one provider's use; ``priced`` is False when the provider is not in the table."""
    price = prices.get(served.billing)
    if price is None:
        return 0.0, False
    usd = (use.audio_seconds / 60.0 * price.per_minute + use.characters / 1000.0 * price.per_1k_chars
           + use.input_tokens / 1e6 * price.input_per_mtok + use.output_tokens / 1e6 * price.output_per_mtok)
    return usd, True


def cost_report(prices: StagePrices, uses: Mapping[str, Mapping[Served, StageUse]]) -> dict[str, Any]:
    """The ``x_voicecall.cost`` block of a ``response.done``: per stage, the providers that served it, what they
    were used for and what it cost, plus the total (USD)."""
    stages: dict[str, Any] = {}
    total = 0.0
    for stage, per_provider in uses.items():
        entries = []
        stage_usd = 0.0
        for served, use in per_provider.items():
            usd, priced = stage_cost(prices, served, use)
            stage_usd += usd
            entry: dict[str, Any] = {"provider": served.provider, "billing": served.billing, "priced": priced,
                                     "usd": round(usd, 8)}
            if use.audio_seconds:
                entry["audio_seconds"] = round(use.audio_seconds, 3)
            if use.characters:
                entry["characters"] = use.characters
            if use.input_tokens or use.output_tokens:
                entry["input_tokens"], entry["output_tokens"] = use.input_tokens, use.output_tokens
            entries.append(entry)
        stages[stage] = {"usd": round(stage_usd, 8), "providers": entries}
        total += stage_usd
    return {"currency": "USD", "total_usd": round(total, 8), "stages": stages}
