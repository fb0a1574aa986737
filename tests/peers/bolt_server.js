#!/usr/bin/env node
'use strict';
// A SOFA Bolt RPC server (npm sofa-rpc-node) exposing a test service, for Outrigger's peer
// tests. Prints its port on stdout once listening, then serves until killed.
//
//   node bolt_server.js [--port 0] [--interface com.outrigger.test.EchoService] [--version 1.0]
//
// Methods: echo(x) -> x; plus(a, b) -> a + b; hello(name) -> "hello " + name;
// fail(message) -> throws Error(message); sleep(ms) -> "slept <ms>" after ms.
const peerRequire = require('./peer_require');
const { RpcServer } = peerRequire('sofa-rpc-node').server;

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const port = Number(arg('port', '0'));
const interfaceName = arg('interface', 'com.outrigger.test.EchoService');
const version = arg('version', '1.0');

const server = new RpcServer({ logger: peerRequire.stderrLogger, port, version });
server.addService({ interfaceName, version }, {
  async echo(x) { return x; },
  async plus(a, b) { return a + b; },
  async hello(name) { return 'hello ' + name; },
  async fail(message) { throw new Error(message || 'failed on purpose'); },
  async sleep(ms) {
    await new Promise(resolve => setTimeout(resolve, Number(ms)));
    return 'slept ' + ms;
  },
});

server.start().then(() => {
  const address = server._servers[0].address();
  process.stdout.write(address.port + '\n');
}, err => {
  console.error('bolt_server: cannot start:', err);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { server.close().finally(() => process.exit(0)); });
}
