"""Request plane (streamed request/response) and event plane (pub/sub) transports."""
