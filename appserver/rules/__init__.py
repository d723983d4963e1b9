"""Rules (SPEC Part 3): declared in advance, evaluated inside the proxy, the suite asked only when a rule says so."""
