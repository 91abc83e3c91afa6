"""The socket: one typed, multiplexed WebSocket per client, a hub across nodes, durable streams."""
