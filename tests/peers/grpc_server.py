"""A gRPC server written with grpcio, without generated code: raw bytes in and out.

    grpc_server.py [--port 0]

Prints only its port on stdout once serving; serves until SIGTERM. Methods:
  /outrigger.test.Echo/Unary   answers {"body": <request as text>, "metadata": {<what it saw>}}
                               as JSON, with initial metadata x-served-by: grpcio-peer and
                               trailing metadata x-trailer: done
  /outrigger.test.Echo/Stream  server-streaming: a request "N" gets N answers "item-0".."item-N-1",
                               then trailing metadata x-trailer: done
  /outrigger.test.Echo/Fail    answers status NOT_FOUND, details "no such thing"
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc


def ident(b):
    return b


def unary(request, context):
    seen = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
    context.send_initial_metadata((("x-served-by", "grpcio-peer"),))
    context.set_trailing_metadata((("x-trailer", "done"),))
    return json.dumps({"body": request.decode("utf-8", "replace"), "metadata": seen}).encode()


def stream(request, context):
    n = int(request.decode() or "0")
    for i in range(n):
        yield f"item-{i}".encode()
    context.set_trailing_metadata((("x-trailer", "done"),))


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("outrigger.test.Echo", handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1)


if __name__ == "__main__":
    sys.exit(main())
