"""`make jmeter`: prepares a run, starts JMeter headless on loadtest/jmeter/eventflow.jmx, prints the summary.

Preparation needs the admin (EVENTFLOW_ADMIN_EMAIL/_PASSWORD, or var/secrets.env as `make up` writes it): it
makes one organizer and publishes the two events the plan reads and buys (a large one, and the flash sale's
100 tickets), and hands their ids and the organizer's token to JMeter as -J properties. After the run it reads
the JTL (CSV) and prints samples, throughput, p50/p95/p99 and errors per sampler, then checks the flash sale:
never more sold than there were tickets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.tables import markdown_table

ROOT = Path(__file__).resolve().parents[2]
PLAN = Path(__file__).with_name("eventflow.jmx")
PASSWORD = "una clave larga para medir velocidad"
FLASH_TICKETS = 100
JMETER_HOME = Path(os.environ.get("JMETER_HOME", "/usr/share/jmeter"))
# JMeter 2.13's XStream reads and writes JDK internals that Java 17 closes by default.
JAVA17_OPENS = " ".join(
    f"--add-opens java.base/{pkg}=ALL-UNNAMED"
    for pkg in ("java.lang", "java.util", "java.lang.reflect", "java.text", "java.io", "java.net", "sun.nio.ch")
)


def java_command(launcher: Path) -> list[str]:
    """java with JMeter's jars (lib/ext, and the Debian jars its manifest names) and the launcher class."""
    jars = sorted(str(j) for j in (JMETER_HOME / "lib").glob("*.jar"))
    jars += sorted(str(j) for j in (JMETER_HOME / "lib" / "ext").glob("*.jar"))
    classpath = ":".join([str(launcher), str(JMETER_HOME / "bin" / "ApacheJMeter.jar"), *jars])
    java = shutil.which("java") or "java"
    return [java, *JAVA17_OPENS.split(), f"-Djmeter.home={JMETER_HOME}", "-cp", classpath, "EventflowJMeter"]


def admin_credentials() -> tuple[str, str]:
    email, password = os.environ.get("EVENTFLOW_ADMIN_EMAIL"), os.environ.get("EVENTFLOW_ADMIN_PASSWORD")
    if email and password:
        return email, password
    secrets = Path(os.environ.get("EVENTFLOW_VAR_DIR", ROOT / "var")) / "secrets.env"
    found = dict(line.split("=", 1) for line in secrets.read_text().splitlines() if "=" in line)
    return found["EVENTFLOW_ADMIN_EMAIL"].strip(), found["EVENTFLOW_ADMIN_PASSWORD"].strip()


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(f"{base}{path}", method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data, timeout=30) as resp:
        return json.loads(resp.read())


def prepare(base: str) -> dict[str, str]:
    """The organizer and the two events, through the same public API the plan uses."""
    email, password = admin_credentials()
    admin = call(base, "POST", "/api/auth/token", {"email": email, "password": password})["access_token"]
    tag = uuid.uuid4().hex[:10]
    cuenta = {
        "tipo_documento": "Pasaporte",
        "nro_documento": f"O{uuid.uuid4().int % 10**8:08d}",
        "nombre": "Productora",
        "apellido": "Ensayo",
        "email": f"org.jm.{tag}@ejemplo.com",
        "password": PASSWORD,
    }
    organizer = call(base, "POST", "/api/usuarios", cuenta)
    call(base, "PUT", f"/api/usuarios/{organizer['id']}/roles", {"roles": ["organizador"]}, admin)
    token = call(base, "POST", "/api/auth/token", {"email": cuenta["email"], "password": PASSWORD})["access_token"]

    def evento(nombre: str, aforo: int) -> str:
        body = {
            "nombre": nombre,
            "descripcion": "prueba de carga",
            "fecha": "2031-01-01T21:00:00+00:00",
            "lugar": "Estadio",
            "aforo_total": aforo,
            "precio": 30,
            "categoria": "musica",
            "limite_por_usuario": 1000,  # the mixed load's buyers reserve the large event many times
        }
        return str(call(base, "POST", "/api/eventos", body, token)["id"])

    return {
        "org_token": token,
        "evento_grande": evento(f"JMeter grande {tag}", 1_000_000),
        "evento_flash": evento(f"JMeter venta flash {tag}", FLASH_TICKETS),
    }


def percentile(sorted_ms: list[int], q: float) -> int:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))] if sorted_ms else 0


def summary(jtl: Path) -> str:
    by_label: dict[str, list[int]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    codes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    with jtl.open(newline="") as f:
        for row in csv.DictReader(f):
            group = row["threadName"].rsplit(" ", 1)[0]  # "5 flash sale 5-17": the thread group
            label, elapsed, ts = f"{group}: {row['label']}", int(row["elapsed"]), int(row["timeStamp"])
            by_label[label].append(elapsed)
            errors[label] += row["success"] != "true"
            codes[label][row["responseCode"]] += 1
            first[label] = min(first.get(label, ts), ts)
            last[label] = max(last.get(label, ts + elapsed), ts + elapsed)
    head = ["sampler", "samples", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "status codes"]
    rows = []
    for label, lat in by_label.items():
        lat.sort()
        span = max(1, last[label] - first[label]) / 1000
        shown = " ".join(f"{c}:{n}" for c, n in sorted(codes[label].items()))
        rows.append(
            [
                label,
                str(len(lat)),
                f"{len(lat) / span:.0f}",
                str(percentile(lat, 0.50)),
                str(percentile(lat, 0.95)),
                str(percentile(lat, 0.99)),
                f"{errors[label]} ({100 * errors[label] / len(lat):.1f} %)",
                shown,
            ]
        )
    return markdown_table(head, rows)


def flash_check(base: str, evento: str, token: str) -> str:
    """Sold = tickets minus what the read model says is left; it converges in well under a few seconds."""
    disponibles = FLASH_TICKETS
    for _ in range(50):
        disponibles = int(call(base, "GET", f"/api/eventos/{evento}", token=token)["entradas_disponibles"])
        if disponibles == 0:
            break
        time.sleep(0.1)
    vendidas = FLASH_TICKETS - disponibles
    verdict = "OK" if 0 <= disponibles <= FLASH_TICKETS else "OVERSOLD"
    return f"flash sale: {FLASH_TICKETS} tickets, {vendidas} sold, {disponibles} left: {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LOADTEST_HOST", "http://127.0.0.1:8080"))
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "loadtest")
    parser.add_argument("--launcher", type=Path, default=ROOT / "var" / "jmeter", help="EventflowJMeter.class dir")
    parser.add_argument("-J", dest="props", action="append", default=[], help="extra JMeter property k=v")
    args = parser.parse_args()
    base = args.host.rstrip("/")
    url = urlsplit(base)
    prepared = prepare(base)
    args.out.mkdir(parents=True, exist_ok=True)
    jtl = args.out / "jmeter.jtl"
    jtl.unlink(missing_ok=True)
    props = {
        "host": url.hostname or "127.0.0.1",
        "port": str(url.port or 80),
        **prepared,
        "jmeter.save.saveservice.output_format": "csv",
        "jmeter.save.saveservice.print_field_names": "true",
        # uvicorn closes a keep-alive connection after 5 s idle (the flash sale's buyers wait longer than that at
        # the synchronizing timer): drop ours after 4 s instead of writing into a closed one; and resend once,
        # which is safe because every write carries its Idempotency-Key
        "httpclient4.idletimeout": "4000",
        "httpclient4.retrycount": "1",
        **dict(p.split("=", 1) for p in args.props),
    }
    cmd = [*java_command(args.launcher), "-n", "-t", str(PLAN), "-l", str(jtl), "-j", str(args.out / "jmeter.log")]
    cmd += [f"-J{k}={v}" for k, v in props.items()]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    if not jtl.exists():
        sys.exit(f"JMeter wrote no results (see {args.out / 'jmeter.log'})")
    print(f"\nJMeter plan {PLAN.name} against {base}, {time.monotonic() - started:.0f} s; JTL: {jtl}\n")
    print(summary(jtl))
    print()
    print(flash_check(base, prepared["evento_flash"], prepared["org_token"]))


if __name__ == "__main__":
    main()
