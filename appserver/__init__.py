"""The app server: control API, proxy endpoint, connection lifetimes."""
