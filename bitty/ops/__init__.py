"""Operations: the status server (Prometheus metrics, health, JSON, live page), the terminal view, logging."""
