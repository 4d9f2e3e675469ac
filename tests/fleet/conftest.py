from tests.fleet.natsfix import nats_url, stream_names

__all__ = ["nats_url", "stream_names"]
