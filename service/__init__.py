"""The router microservice: one core (``core.RouteService``) behind thin HTTP and gRPC adapters."""
