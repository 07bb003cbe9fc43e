"""Live updates: the event relay, topics and the websocket consumer."""
