"""mitmdump and its capture modes: launching, supervising, proving capture works, certificates."""
