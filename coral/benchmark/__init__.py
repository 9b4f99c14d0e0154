"""Benchmark problems (QuixBugs layout): loading, prompts, candidate extraction, running."""
