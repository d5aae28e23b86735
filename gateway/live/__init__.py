"""Live status: run and node transitions pushed to WebSocket clients as they happen."""
