"""Print the env file of the Kubernetes Secret `eventflow-secrets` (one NAME=value a line), made fresh:

    python deploy/k8s/make_secrets_env.py > deploy/k8s/overlays/local/secrets.env

Run it once per cluster and keep the file in your secret store: new personal-data keys would make the stored
personal data unreadable. Set EVENTFLOW_ADMIN_EMAIL / EVENTFLOW_ADMIN_PASSWORD (or any other key) in the environment
to use yours. The services' client secrets are derived from the service key (eventflow.system.client_secret), so
this needs the project installed (`make` does it).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from eventflow.system import client_secret


def main() -> None:
    def given(name: str, make: str) -> str:
        return os.environ.get(name) or make

    values = {
        name: given(name, base64.b64encode(os.urandom(32)).decode())
        for name in ("EVENTFLOW_MASTER_KEY", "EVENTFLOW_PSEUDONYM_KEY", "EVENTFLOW_SERVICE_KEY")
    }
    values["EVENTFLOW_ADMIN_EMAIL"] = given("EVENTFLOW_ADMIN_EMAIL", "admin@eventflow.example")
    values["EVENTFLOW_ADMIN_PASSWORD"] = given("EVENTFLOW_ADMIN_PASSWORD", secrets.token_urlsafe(18))
    for service in ("events", "reservations"):
        values[f"{service.upper()}_CLIENT_SECRET"] = client_secret(values["EVENTFLOW_SERVICE_KEY"], service)
    for service in ("users", "events", "reservations"):
        values[f"NATS_{service.upper()}_PASSWORD"] = secrets.token_urlsafe(24)
    for user in ("users", "events", "reservations", "gateway", "health"):
        values[f"REDIS_{user.upper()}_PASSWORD"] = secrets.token_urlsafe(24)
    values["METRICS_TOKEN"] = secrets.token_urlsafe(24)
    sys.stdout.write("".join(f"{name}={value}\n" for name, value in values.items()))


if __name__ == "__main__":
    main()
