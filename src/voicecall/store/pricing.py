"""Estimated cost of a response from its ``usage`` block, in USD.

Prices are USD per 1M tokens, from the public OpenAI model pages (see the reference, section 9). Keys:
``text_in``, ``text_cached``, ``text_out``, ``audio_in``, ``audio_cached``, ``audio_out``, ``image_in``,
``image_cached``. Formula, per response (cached tokens are a *subset* of the input tokens)::

    (text_in_tokens  - cached_text)  * text_in  + cached_text  * text_cached  + text_out_tokens  * text_out
  + (audio_in_tokens - cached_audio) * audio_in + cached_audio * audio_cached + audio_out_tokens * audio_out
  + (image_in_tokens - cached_image) * image_in + cached_image * image_cached

Model names resolve as: the exact name, else the name without a trailing ``-YYYY-MM-DD`` snapshot date
(``gpt-realtime-mini-2025-10-06`` -> ``gpt-realtime-mini``). Local models (anything that is not an OpenAI
name, e.g. ``voicecall-local``) cost 0. An OpenAI-looking name that is not in the table (a new model) is
priced like its closest family (``gpt-realtime-3`` -> ``gpt-realtime``) with a warning: an estimate is more
useful for spend limits than 0. ``store.prices`` in the configuration overrides or adds entries (unspecified
keys keep the built-in price of that model, or 0 for a new name)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

log = logging.getLogger("voicecall.store")

PRICE_KEYS: tuple[str, ...] = (
    "text_in",
    "text_cached",
    "text_out",
    "audio_in",
    "audio_cached",
    "audio_out",
    "image_in",
    "image_cached",
)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens for one model."""

    text_in: float = 0.0
    text_cached: float = 0.0
    text_out: float = 0.0
    audio_in: float = 0.0
    audio_cached: float = 0.0
    audio_out: float = 0.0
    image_in: float = 0.0
    image_cached: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


FREE = ModelPrice()


def _p(
    text: tuple[float, float, float],
    audio: tuple[float, float, float],
    image: tuple[float, float] = (0.0, 0.0),
) -> ModelPrice:
    return ModelPrice(*text, *audio, *image)


_GPT_REALTIME = _p((4.0, 0.40, 16.0), (32.0, 0.40, 64.0), (5.0, 0.50))
_GPT_REALTIME_2 = _p((4.0, 0.40, 24.0), (32.0, 0.40, 64.0), (5.0, 0.50))
_MINI = _p((0.60, 0.06, 2.40), (10.0, 0.30, 20.0), (0.80, 0.08))
_4O_PREVIEW = _p((5.0, 2.50, 20.0), (40.0, 2.50, 80.0))

DEFAULT_PRICES: dict[str, ModelPrice] = {
    # gpt-realtime: text from the compare page; audio as in the cookbook and on the 1.5/2 pages; the image
    # price is not published for this model, assumed equal to gpt-realtime-1.5's.
    "gpt-realtime": _GPT_REALTIME,
    "gpt-realtime-2025-08-28": _GPT_REALTIME,
    "gpt-realtime-1.5": _GPT_REALTIME,
    "gpt-realtime-2": _GPT_REALTIME_2,
    "gpt-realtime-2.1": _GPT_REALTIME_2,
    "gpt-realtime-2.1-mini": _MINI,
    # gpt-realtime-mini: only text-in ($0.60) is confirmed; the rest assumed equal to gpt-realtime-2.1-mini.
    "gpt-realtime-mini": _MINI,
    # Beta-era previews (secondary sources): 2024-12-17 and later; 2024-10-01 had higher audio prices.
    "gpt-4o-realtime-preview": _4O_PREVIEW,
    "gpt-4o-realtime-preview-2024-10-01": _p((5.0, 2.50, 20.0), (100.0, 20.0, 200.0)),
    "gpt-4o-mini-realtime-preview": _p((0.60, 0.30, 2.40), (10.0, 0.30, 20.0)),
}

_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_OPENAI_NAME = re.compile(r"^(gpt-|chatgpt-|o\d)", re.IGNORECASE)
_FLAGSHIP = "gpt-realtime"


def is_openai_model(model: str | None) -> bool:
    """True for names OpenAI uses (``gpt-...``, ``chatgpt-...``, ``o1``...); local model names are anything
    else."""
    return bool(model) and bool(_OPENAI_NAME.match(model or ""))


def _validate_override(model: str, values: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(  # noqa: TRY004 - a configuration error, reported as ValueError like the others
            f"store.prices.{model} must be a mapping of {', '.join(PRICE_KEYS)} to USD per 1M tokens"
        )
    out: dict[str, float] = {}
    for key, value in values.items():
        if key not in PRICE_KEYS:
            raise ValueError(f"store.prices.{model}: unknown price key {key!r}; use {', '.join(PRICE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"store.prices.{model}.{key} must be a number >= 0 (USD per 1M tokens)")
        out[key] = float(value)
    return out


def _num(value: Any) -> float:
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0
    )


class PriceTable:
    """The built-in prices plus the configuration's overrides; resolves model names and computes costs."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        table = dict(DEFAULT_PRICES)
        for model, values in (overrides or {}).items():
            checked = _validate_override(model, values)
            base = table.get(model) or table.get(_DATE_SUFFIX.sub("", model)) or FREE
            table[model] = replace(base, **checked)
        self._table = table
        self._warned: set[str] = set()

    def resolve(self, model: str | None) -> tuple[str | None, ModelPrice]:
        """``(table entry used, price)``; ``(None, FREE)`` for local models."""
        if not model:
            return None, FREE
        for name in (model, _DATE_SUFFIX.sub("", model)):
            if name in self._table:
                return name, self._table[name]
        if not is_openai_model(model):
            return None, FREE
        base = _DATE_SUFFIX.sub("", model)
        family = max((k for k in self._table if base.startswith(k + "-")), key=len, default=_FLAGSHIP)
        if model not in self._warned:
            self._warned.add(model)
            log.warning(
                "history: no price for model %r; estimating with the prices of %r "
                "(set store.prices.%s to correct this)",
                model,
                family,
                model,
            )
        return family, self._table[family]

    def price_for(self, model: str | None) -> ModelPrice:
        """The price used for ``model`` (zero for local models)."""
        return self.resolve(model)[1]

    def cost_usd(self, model: str | None, usage: Mapping[str, Any] | None) -> float:
        """Estimated USD cost of one response's ``usage`` (0 when there is no usage)."""
        if not usage:
            return 0.0
        price = self.price_for(model)
        if price == FREE:
            return 0.0
        tokens = usage_tokens(usage)
        total = sum(tokens[key] * float(getattr(price, key)) for key in PRICE_KEYS)
        return round(total / 1_000_000, 10)


def usage_tokens(usage: Mapping[str, Any]) -> dict[str, float]:
    """Split a GA ``usage`` block into the eight billed quantities (non-cached input, cached input,
    output)."""
    ind = usage.get("input_token_details") if isinstance(usage.get("input_token_details"), Mapping) else None
    outd = (
        usage.get("output_token_details") if isinstance(usage.get("output_token_details"), Mapping) else None
    )
    if ind is not None:
        text_in, audio_in, image_in = (
            _num(ind.get(k)) for k in ("text_tokens", "audio_tokens", "image_tokens")
        )
        cached_total = _num(ind.get("cached_tokens"))
        cd = ind.get("cached_tokens_details")
        if isinstance(cd, Mapping):
            cached_text, cached_audio, cached_image = (
                _num(cd.get(k)) for k in ("text_tokens", "audio_tokens", "image_tokens")
            )
        else:  # only a total: attribute it to text first, then audio, then image
            cached_text = min(cached_total, text_in)
            cached_audio = min(cached_total - cached_text, audio_in)
            cached_image = min(cached_total - cached_text - cached_audio, image_in)
    else:  # no details at all: count everything as text
        text_in, audio_in, image_in = _num(usage.get("input_tokens")), 0.0, 0.0
        cached_text, cached_audio, cached_image = 0.0, 0.0, 0.0
    if outd is not None:
        text_out, audio_out = _num(outd.get("text_tokens")), _num(outd.get("audio_tokens"))
    else:
        text_out, audio_out = _num(usage.get("output_tokens")), 0.0
    cached_text, cached_audio, cached_image = (
        min(cached_text, text_in),
        min(cached_audio, audio_in),
        min(cached_image, image_in),
    )
    return {
        "text_in": text_in - cached_text,
        "text_cached": cached_text,
        "text_out": text_out,
        "audio_in": audio_in - cached_audio,
        "audio_cached": cached_audio,
        "audio_out": audio_out,
        "image_in": image_in - cached_image,
        "image_cached": cached_image,
    }


_default_table: PriceTable | None = None


def cost_usd(
    model: str | None, usage: Mapping[str, Any] | None, prices: Mapping[str, Mapping[str, Any]] | None = None
) -> float:
    """Estimated USD cost of one response (built-in prices, or with ``prices`` overrides as in
    ``store.prices``)."""
    global _default_table
    if prices:
        return PriceTable(prices).cost_usd(model, usage)
    if _default_table is None:
        _default_table = PriceTable()
    return _default_table.cost_usd(model, usage)


class LocalPrices(PriceTable):
    """Prices for the local engine: every model name costs nothing, even an OpenAI name a client asked for
    with ``?model=gpt-realtime`` (the answer still comes from this machine's models)."""

    def resolve(self, model: str | None) -> tuple[str | None, ModelPrice]:
        return None, FREE
