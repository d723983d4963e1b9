"""The data path: WebSocket legs, pumps, connections, the proxy endpoint. Imports neither
control/ nor capture/ nor jsonrpcserver: it is given its deciders and sinks."""
