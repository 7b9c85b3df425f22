"""Users service (port 8001): registration with uniqueness on the CP side, sealed personal data, AP reads."""
