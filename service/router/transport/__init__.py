"""The router's transports: thin HTTP (FastAPI) and gRPC adapters over ``RouteService``, their
schemas
and every conversion between protobuf, pydantic and domain values."""
