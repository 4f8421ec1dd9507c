"""The two clients every measurement uses, identically for the floor and the service."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

EVENT = {"message": "hello from bench", "n": 1, "nested": {"ok": True}}
PAYLOAD = json.dumps(EVENT, separators=(",", ":")).encode()


class InvokeFailed(Exception):
    pass


class RawClient:
    """One keep-alive `http.client` connection: the thinnest client the standard library has."""

    def __init__(self, port: int, function: str, *, timeout: float = 60) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.path = f"/2015-03-31/functions/{function}/invocations"
        self.headers = {"Content-Type": "application/json"}

    def invoke(self, payload: bytes = PAYLOAD, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        self.conn.request("POST", self.path, payload, headers or self.headers)
        response = self.conn.getresponse()
        return response.status, response.read(), response.headers

    def timed(self) -> float:
        """One invoke of PAYLOAD; its round trip in seconds. Checked after the clock stops."""
        start = time.perf_counter()
        try:
            self.conn.request("POST", self.path, PAYLOAD, self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next call reconnects
            raise
        elapsed = time.perf_counter() - start
        if response.status != 200 or json.loads(body) != EVENT:
            raise InvokeFailed(f"HTTP {response.status}: {body[:300]!r}")
        return elapsed

    def reconnect(self) -> None:
        """Drop the connection; the next call opens a new one."""
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


def boto3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60, max_pool_connections=2),
    )


class Boto3Invoker:
    """boto3's `invoke` on one client (one keep-alive connection from its pool)."""

    def __init__(self, url: str, function: str) -> None:
        self.client = boto3_client(url)
        self.function = function

    def timed(self) -> float:
        start = time.perf_counter()
        response = self.client.invoke(FunctionName=self.function, Payload=PAYLOAD)
        body = response["Payload"].read()
        elapsed = time.perf_counter() - start
        if response["StatusCode"] != 200 or "FunctionError" in response or json.loads(body) != EVENT:
            raise InvokeFailed(f"boto3 invoke: {response.get('StatusCode')} {body[:300]!r}")
        return elapsed

    def reconnect(self) -> None:
        pass  # botocore's pool replaces a connection the server closed, and retries on it

    def close(self) -> None:
        self.client.close()
