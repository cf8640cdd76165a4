"""The router microservice: one decision core (``core.RouteService``), its batching, bundle loading,
metrics and registry watch; ``tierwise serve`` (``main``) runs it behind ``transport``."""
