"""The trace (SPEC Part 5): record, export (JSON Lines, HAR 1.2), and a timeline for people."""
