"""The websocket engine: connection loop, watchdog, handover."""
