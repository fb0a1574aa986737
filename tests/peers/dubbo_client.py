#!/usr/bin/env python3
"""A Dubbo 2 consumer (PyPI dubbo-ssl-python: Dubbo 2 framing + Hessian2 over plain TCP) that
calls one method of a service at HOST:PORT and prints the result as JSON on stdout. Exits 1,
with the error on stderr, when the call fails.

    dubbo_client.py HOST:PORT [--service org.apache.dubbo.samples.api.GreetingsService]
        [--method sayHello] [--args '["world"]'] [--version 1.0.0] [--group ""]
        [--dubbo-version 2.4.10] [--timeout 3]

The client only reads response flags 0-2, so it announces the pre-2.0.2 Dubbo version 2.4.10
by default, for which providers send no response attachments.
"""
import argparse
import json
import logging
import sys

from dubbo_ssl.client import DubboClient


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("address", help="HOST:PORT of the provider (or proxy)")
    p.add_argument("--service", default="org.apache.dubbo.samples.api.GreetingsService")
    p.add_argument("--method", default="sayHello")
    p.add_argument("--args", default='["world"]', help="JSON array of arguments")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--group", default="")
    p.add_argument("--dubbo-version", default="2.4.10")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    p.add_argument("--verbose", action="store_true", help="show the library's own logging")
    a = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if a.verbose else logging.CRITICAL)
    client = DubboClient(a.service, a.group, version=a.version, dubbo_version=a.dubbo_version, host=a.address)
    try:
        result = client.call(a.method, json.loads(a.args), timeout=a.timeout)
    except Exception as e:  # the library raises its own exception types
        print("dubbo_client: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        return 1
    print(json.dumps(result, default=str, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
