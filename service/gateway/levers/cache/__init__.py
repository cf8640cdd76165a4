"""The response cache lever: keys and stores (``store``), its vector index (``index``), the
PostgreSQL
store shared by replicas (``store_pg``) and the lookup in front of them (``response``)."""
