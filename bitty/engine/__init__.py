"""The websocket engine: ``connection`` (the socket loop) over ``dispatch`` (frames to actions,
no I/O), ``watchdog`` (every restart verdict), ``reconnect``, ``keepalive``, ``subscribe`` (what is
sent), ``events`` (callbacks, counters), ``handover`` (forced disconnects); ``legacy`` is the
original ``BaseConsumer`` subclass API on top."""
