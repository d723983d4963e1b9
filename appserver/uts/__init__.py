"""uts-proxy's REST control API over our sessions, rules and trace (SPEC Part 8)."""
