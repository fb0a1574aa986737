#!/usr/bin/env node
'use strict';
// A SOFA Bolt RPC client (npm sofa-rpc-node) that invokes one method of a service at a given
// address and prints the result as JSON on stdout. Exits 1 (message on stderr) on failure.
//
//   node bolt_client.js HOST:PORT [--interface com.outrigger.test.EchoService] [--version 1.0]
//        [--method hello] [--args '["world"]'] [--timeout 3000] [--protocol bolt|bolt2]
const peerRequire = require('./peer_require');
const { RpcClient } = peerRequire('sofa-rpc-node').client;

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const serverHost = process.argv[2];
if (!serverHost || serverHost.startsWith('--')) {
  console.error('usage: bolt_client.js HOST:PORT [--interface I] [--version V] [--method M] [--args JSON] [--timeout MS]');
  process.exit(2);
}
const interfaceName = arg('interface', 'com.outrigger.test.EchoService');
const version = arg('version', '1.0');
const method = arg('method', 'hello');
const args = JSON.parse(arg('args', '["world"]'));
const responseTimeout = Number(arg('timeout', '3000'));

async function main() {
  const client = new RpcClient({ logger: peerRequire.stderrLogger });
  const consumer = client.createConsumer({ interfaceName, version, serverHost });
  await consumer.ready();
  try {
    const result = await consumer.invoke(method, args, { responseTimeout });
    process.stdout.write(JSON.stringify(result === undefined ? null : result) + '\n');
  } finally {
    await client.close();
  }
}

main().then(() => process.exit(0), err => {
  console.error('bolt_client: ' + (err && err.message || err));
  process.exit(1);
});
