"""One service invocation with the official Dapr Python SDK (PyPI `dapr`), used as a Dapr user
would: `DaprClient()` finds the sidecar through DAPR_HTTP_PORT / DAPR_GRPC_PORT, waits for
GET /v1.0/healthz/outbound, and invokes over HTTP (the default) or gRPC
(DAPR_API_METHOD_INVOCATION_PROTOCOL=grpc). DAPR_API_TOKEN is sent when set.

    dapr_client.py APP_ID METHOD [--verb POST] [--data TEXT] [--content-type T]
                   [--header K=V ...] [--query K=V ...]

Prints one JSON object on stdout: {"status", "data", "contentType", "headers"} for an answer, or
{"error", "errorCode", "status"} when the SDK raised; exits 0 either way (1 on a usage error).
"""

import argparse
import json
import sys

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError, DaprInternalError


def pairs(items):
    out = []
    for item in items or []:
        k, _, v = item.partition("=")
        out.append((k, v))
    return out


def attr(obj, name):
    """An SDK error's field, whether the SDK version has it as a method or a property."""
    v = getattr(obj, name, None)
    return v() if callable(v) else v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("app_id")
    p.add_argument("method")
    p.add_argument("--verb", default="GET")
    p.add_argument("--data", default="")
    p.add_argument("--content-type", default=None)
    p.add_argument("--header", action="append")
    p.add_argument("--query", action="append")
    a = p.parse_args()
    try:
        with DaprClient() as client:
            r = client.invoke_method(
                a.app_id,
                a.method,
                data=a.data.encode(),
                content_type=a.content_type,
                metadata=tuple(pairs(a.header)),
                http_verb=a.verb,
                http_querystring=tuple(pairs(a.query)),
                timeout=5,
            )
            headers = {}
            raw = r.headers or ()
            for k, v in raw.items() if hasattr(raw, "items") else raw:
                headers[k.lower()] = v if isinstance(v, str) else list(v)
            out = {
                "status": getattr(r, "status_code", None),
                "data": r.text(),
                "contentType": r.content_type,
                "headers": headers,
            }
    except DaprHttpError as e:
        out = {"error": str(e), "errorCode": attr(e, "error_code"), "status": attr(e, "status_code")}
    except DaprInternalError as e:
        out = {"error": str(e), "errorCode": attr(e, "error_code"), "status": None}
    except Exception as e:  # grpc.RpcError and the health wait's timeout
        code = getattr(e, "code", None)
        out = {"error": str(e), "errorCode": str(code()) if callable(code) else None, "status": None}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
