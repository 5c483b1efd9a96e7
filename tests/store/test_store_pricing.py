"""Prices and the cost formula (reference section 9)."""

from __future__ import annotations

import logging

import pytest

from voicecall.store.pricing import DEFAULT_PRICES, PriceTable, cost_usd, is_openai_model, usage_tokens

# The GA response.done example of the reference.
EXAMPLE_USAGE = {
    "total_tokens": 253,
    "input_tokens": 132,
    "output_tokens": 121,
    "input_token_details": {
        "text_tokens": 119,
        "audio_tokens": 13,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}


def test_formula_cached_tokens_are_a_subset_of_input() -> None:
    # (119-64)*4 + 64*0.40 + 13*32 + 30*16 + 91*64, per 1M tokens
    assert cost_usd("gpt-realtime", EXAMPLE_USAGE) == pytest.approx(6965.6 / 1e6)
    tokens = usage_tokens(EXAMPLE_USAGE)
    assert tokens["text_in"] == 55 and tokens["text_cached"] == 64 and tokens["audio_out"] == 91


@pytest.mark.parametrize(
    "model, entry",
    [
        ("gpt-realtime", "gpt-realtime"),
        ("gpt-realtime-2025-08-28", "gpt-realtime-2025-08-28"),
        ("gpt-realtime-1.5", "gpt-realtime-1.5"),
        ("gpt-realtime-2", "gpt-realtime-2"),
        ("gpt-realtime-2.1", "gpt-realtime-2.1"),
        ("gpt-realtime-2.1-mini", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-2.1-mini-2026-07-01", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-mini", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-mini"),
        ("gpt-4o-realtime-preview", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2025-06-03", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-10-01"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
    ],
)
def test_model_resolution(model: str, entry: str) -> None:
    assert PriceTable().resolve(model) == (entry, DEFAULT_PRICES[entry])


def test_snapshot_dates_do_not_fall_into_the_wrong_family() -> None:
    # "gpt-realtime-2025-08-28" starts with "gpt-realtime-2" but is the gpt-realtime snapshot ($16 text out).
    assert PriceTable().price_for("gpt-realtime-2025-08-28").text_out == 16.0
    assert PriceTable().price_for("gpt-realtime-2026-01-15").text_out == 16.0
    assert PriceTable().price_for("gpt-realtime-2").text_out == 24.0


def test_reference_prices() -> None:
    p = PriceTable().price_for
    assert (p("gpt-realtime").audio_in, p("gpt-realtime").audio_cached, p("gpt-realtime").audio_out) == (
        32,
        0.4,
        64,
    )
    assert p("gpt-realtime-2.1").text_out == 24
    assert (p("gpt-realtime-2.1-mini").text_in, p("gpt-realtime-2.1-mini").audio_out) == (0.6, 20)
    assert p("gpt-4o-realtime-preview-2024-10-01").audio_in == 100
    assert p("gpt-4o-realtime-preview").audio_out == 80
    assert p("gpt-4o-mini-realtime-preview").text_cached == 0.3
    # 600 input audio tokens per minute on gpt-realtime = $0.0192
    assert cost_usd(
        "gpt-realtime", {"input_tokens": 600, "input_token_details": {"audio_tokens": 600}}
    ) == pytest.approx(0.0192)


@pytest.mark.parametrize("model", ["voicecall-local", "llama-3.2-3b", "qwen2.5", "", None])
def test_local_models_are_free(model: str | None) -> None:
    assert cost_usd(model, EXAMPLE_USAGE) == 0.0
    assert not is_openai_model(model)


def test_unknown_openai_model_is_estimated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "voicecall.store")
    table = PriceTable()
    assert table.resolve("gpt-realtime-3")[0] == "gpt-realtime"
    assert table.resolve("gpt-realtime-2.1-mini-turbo")[0] == "gpt-realtime-2.1-mini"
    assert table.cost_usd("gpt-realtime-3", EXAMPLE_USAGE) == pytest.approx(6965.6 / 1e6)
    assert "store.prices" in caplog.text
    n = len(caplog.records)
    table.cost_usd("gpt-realtime-3", EXAMPLE_USAGE)
    assert len(caplog.records) == n  # warned once per model


def test_overrides() -> None:
    prices: dict[str, dict[str, float]] = {
        "gpt-realtime": {"audio_out": 50},
        "my-local": {"text_out": 1.0},
        "gpt-new": {"text_in": 2},
    }
    assert PriceTable(prices).price_for("gpt-realtime").audio_out == 50
    assert PriceTable(prices).price_for("gpt-realtime").audio_in == 32  # other keys keep the built-in price
    assert PriceTable(prices).price_for("gpt-realtime-2025-08-28").audio_out == 64  # its own entry
    assert cost_usd("my-local", {"output_tokens": 1_000_000}, prices) == pytest.approx(1.0)
    assert PriceTable(prices).price_for("gpt-new").text_out == 0
    with pytest.raises(ValueError, match="unknown price key 'audio_input'"):
        PriceTable({"gpt-realtime": {"audio_input": 1}})
    with pytest.raises(ValueError, match=">= 0"):
        PriceTable({"gpt-realtime": {"audio_in": -1}})


def test_usage_edge_cases() -> None:
    assert cost_usd("gpt-realtime", None) == 0
    assert cost_usd("gpt-realtime", {}) == 0
    # no details: everything counts as text
    assert cost_usd("gpt-realtime", {"input_tokens": 1_000_000, "output_tokens": 0}) == pytest.approx(4.0)
    # a cached total without the breakdown: attributed to text first
    t = usage_tokens({"input_token_details": {"text_tokens": 10, "audio_tokens": 50, "cached_tokens": 30}})
    assert (t["text_cached"], t["audio_cached"], t["text_in"], t["audio_in"]) == (10, 20, 0, 30)
    # nonsense values are ignored, cached never exceeds input
    t = usage_tokens(
        {
            "input_token_details": {
                "text_tokens": "x",
                "audio_tokens": 5,
                "cached_tokens": 9,
                "cached_tokens_details": {"audio_tokens": 9},
            }
        }
    )
    assert (t["audio_in"], t["audio_cached"], t["text_in"]) == (0, 5, 0)
