"""Forwarding to the tiers' OpenAI-compatible upstreams: failover and breakers (``pool``), SSE
streams
(``sse``)."""
