"""The gateway: one public port (8080) in front of the services; routes /api/* and limits request rates."""
