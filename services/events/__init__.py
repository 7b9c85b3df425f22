"""Events service (port 8002): the catalog of events and their availability, read from Redis."""
