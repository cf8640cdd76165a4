"""tierwise's services: the router microservice (``service.router``), the OpenAI-compatible gateway
with its cost levers (``service.gateway``), the shared stores (``service.store``) and what all of
them
use (``service.shared``). Layers depend downward only: gateway -> router core (via its local
decision source), store, shared; router -> shared; store -> shared."""
