"""What the client API costs per request, on top of the work it asks for.

The v1 app (`carrier_core.api.app.create_app`) over the offline runtime and a fresh embedded
Postgres, called in-process through Starlette's TestClient (no network), N requests each:

- GET /v1/health: no credentials, one `SELECT 1` (the floor: routing, middleware, JSON);
- GET /v1/turns/{id} with an API key, and with an end-user JWT (JWKS fetched once, cached);
- GET /v1/agents/{id}/rooms/{room}/messages with a key (a page of 20);
- POST /v1/agents/{id}/rooms/{room}/messages with a key (ingest; the turn is not run).

Printed: p50/p95 ms and database round trips per request. Authentication is the
difference between a route's figures and health's, less its own queries.

    python bench/api_requests.py [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from carrier_core import Runtime, Settings, load_character
from carrier_core.api.app import create_app
from carrier_core.models import offline_models
from carrier_core.store.database import embedded_database_url
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.turn.run import run_turn

ROOT = Path(__file__).resolve().parent.parent


def serve_jwks(key: rsa.RSAPrivateKey) -> str:
    """A JWKS on a local HTTP server (a thread), as an identity provider publishes it."""
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1"}
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


def measure(
    store: Store, runs: int, call: Callable[[int], Any], expect: int
) -> tuple[float, float, float]:
    for n in range(10):  # warm-up
        assert call(n).status_code == expect
    times: list[float] = []
    before = store.round_trips.count
    for n in range(runs):
        started = time.perf_counter()
        response = call(n)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == expect, response.text
    trips = (store.round_trips.count - before) / runs
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1], trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per route")
    args = parser.parse_args()

    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with tempfile.TemporaryDirectory() as home:
        url = embedded_database_url(Path(home))
        settings = Settings(
            database_url=url,
            jwt_jwks_url=serve_jwks(signing_key),
            jwt_issuer="https://issuer.example",
            jwt_audience="carrier",
        )
        with Runtime.open(settings, offline_models()) as runtime:
            store = runtime.store
            tenant = store.ensure_tenant("bench")
            key = create_key(store, tenant.id, name="bench").secret
            agent = runtime.register_agent(load_character(ROOT / "characters/ada.json"), tenant.id)
            for n in range(30):
                run_turn(
                    runtime,
                    {"agent_id": agent, "room": "r", "sender": "grace", "text": f"Hello {n}"},
                )
            turn = run_turn(
                runtime,
                {"agent_id": agent, "room": "r", "sender": "grace", "text": "I like sailing"},
            ).turn_id
            token = jwt.encode(
                {
                    "sub": "grace",
                    "tenant_id": str(tenant.id),
                    "iss": "https://issuer.example",
                    "aud": "carrier",
                    "exp": int(time.time()) + 3600,
                },
                signing_key,
                algorithm="RS256",
                headers={"kid": "k1"},
            )
            # Posts are stored and would start the room's runner: here nothing runs the turns.
            app = create_app(lambda: runtime, lambda ingested: None)
            keyed = {"Authorization": f"Bearer {key}"}
            user = {"Authorization": f"Bearer {token}"}
            messages = f"/v1/agents/{agent}/rooms/r/messages"
            with TestClient(app) as client:
                rows = {
                    "GET /v1/health (no auth)": (lambda n: client.get("/v1/health"), 200),
                    "GET /v1/turns/{id} (API key)": (
                        lambda n: client.get(f"/v1/turns/{turn}", headers=keyed),
                        200,
                    ),
                    "GET /v1/turns/{id} (JWT)": (
                        lambda n: client.get(f"/v1/turns/{turn}", headers=user),
                        200,
                    ),
                    "GET .../messages (API key)": (
                        lambda n: client.get(messages, headers=keyed),
                        200,
                    ),
                    "POST .../messages (API key)": (
                        lambda n: client.post(
                            messages, headers=keyed, json={"text": f"m{n}", "sender": "bo"}
                        ),
                        202,
                    ),
                }
                print(
                    f"{args.requests} requests per route, in-process, "
                    f"{platform.processor() or platform.machine()}, Python "
                    f"{platform.python_version()}"
                )
                print(f"  {'route':34} {'p50 ms':>7} {'p95 ms':>7} {'round trips':>12}")
                for name, (call, expect) in rows.items():
                    p50, p95, trips = measure(store, args.requests, call, expect)
                    print(f"  {name:34} {p50:7.2f} {p95:7.2f} {trips:12.1f}")


if __name__ == "__main__":
    main()
