"""A native gRPC call with grpcio, as an app calling another app through its Dapr sidecar:
the metadata `dapr-app-id` names the target, the channel goes to the sidecar's gRPC port.

    grpc_client.py ADDR METHOD [--app-id ID] [--data TEXT] [--stream] [--token T]
                   [--header K=V ...] [--timeout 5]

METHOD is the full path, e.g. /outrigger.test.Echo/Unary. Prints one JSON object on stdout:
{"code", "details", "messages": [...], "initial": {...}, "trailing": {...}}; exits 0 whatever
the status (1 on a usage error).
"""

import argparse
import json
import sys

import grpc


def ident(b):
    return b


def md(pairs):
    return {k: v for k, v in (pairs or ()) if not k.endswith("-bin")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("method")
    p.add_argument("--app-id")
    p.add_argument("--data", default="")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--token")
    p.add_argument("--header", action="append")
    p.add_argument("--timeout", type=float, default=5)
    a = p.parse_args()
    metadata = []
    if a.app_id:
        metadata.append(("dapr-app-id", a.app_id))
    if a.token:
        metadata.append(("dapr-api-token", a.token))
    for h in a.header or []:
        k, _, v = h.partition("=")
        metadata.append((k, v))
    out = {"messages": [], "initial": {}, "trailing": {}}
    with grpc.insecure_channel(a.addr) as channel:
        try:
            if a.stream:
                call = channel.unary_stream(a.method, ident, ident)(
                    a.data.encode(), metadata=metadata, timeout=a.timeout
                )
                for m in call:
                    out["messages"].append(m.decode("utf-8", "replace"))
            else:
                _, call = channel.unary_unary(a.method, ident, ident).with_call(
                    a.data.encode(), metadata=metadata, timeout=a.timeout
                )
                out["messages"].append(_.decode("utf-8", "replace"))
            out["code"] = call.code().name
            out["details"] = call.details()
            out["initial"] = md(call.initial_metadata())
            out["trailing"] = md(call.trailing_metadata())
        except grpc.RpcError as e:
            out["code"] = e.code().name
            out["details"] = e.details()
            out["initial"] = md(e.initial_metadata())
            out["trailing"] = md(e.trailing_metadata())
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
