"""Where the gateway's decisions come from: the router core in process (``local``) or the router
service over gRPC (``remote``), behind one ``DecisionSource`` interface (``source``)."""
