"""Benchmarks (``voicecall bench …``): they print figures and write them to a JSON file; they are not tests."""
