"""Outbound access as a handler sees it: through HTTP(S)_PROXY (set by the service when allowed), a CONNECT
tunnel, and a direct socket."""

import http.client
import os
import socket
import urllib.error
import urllib.request


def handler(event, context):
    result = {"proxy": os.environ.get("HTTPS_PROXY")}
    for url in event.get("urls", []):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                result[url] = [response.status, response.read().decode(errors="replace")]
        except urllib.error.HTTPError as error:
            result[url] = [error.code, error.read().decode(errors="replace")]
        except Exception as error:
            result[url] = [type(error).__name__, str(error)[:200]]
    if tunnel := event.get("tunnel"):
        host, port = tunnel
        try:
            connection = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
            connection.set_tunnel(host, port)
            connection.request("GET", "/egress-target.txt")
            response = connection.getresponse()
            result["tunnel"] = [response.status, response.read().decode(errors="replace")]
        except Exception as error:
            result["tunnel"] = [type(error).__name__, str(error)[:200]]
    if direct := event.get("direct"):
        try:
            socket.create_connection(tuple(direct), timeout=3).close()
            result["direct"] = "connected"
        except OSError as error:
            result["direct"] = error.strerror or str(error)
    if abstract := event.get("abstract"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect("\0" + abstract)
            result["abstract"] = "connected"
        except OSError as error:
            result["abstract"] = error.strerror or str(error)
        finally:
            sock.close()
    return result
