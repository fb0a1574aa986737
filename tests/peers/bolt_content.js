#!/usr/bin/env node
'use strict';
// The application side of a Bolt call through Outrigger's bolt channel: like a Layotto app,
// it serialises the SofaRequest itself (sofa-bolt-node's Hessian codec, the dialect
// sofa-rpc-node servers read) and reads the SofaResponse it gets back. Outrigger carries both
// as opaque bytes.
//
//   node bolt_content.js request --service com.outrigger.test.EchoService:1.0 --method hello \
//        [--args '["world"]']          prints the request content, hex, on stdout
//   node bolt_content.js response HEX
//                                      prints {"appResponse": ..., "error": null|"message"}
const path = require('path');
const peerRequire = require('./peer_require');
const ByteBuffer = peerRequire('byte');

const tools = process.env.OUTRIGGER_TOOLS || path.resolve(__dirname, '..', '..', '.tools');
// The codec module is not part of sofa-bolt-node's public exports; resolve it in the tool tree.
const codec = require(path.join(tools, 'node', 'node_modules', 'sofa-bolt-node', 'lib', 'codec', 'hessian'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const mode = process.argv[2];
if (mode === 'request') {
  const buf = ByteBuffer.allocate(1024);
  codec.encode(buf, {
    className: 'com.alipay.sofa.rpc.core.request.SofaRequest',
    codecType: 'hessian2',
    obj: {
      targetAppName: '',
      methodName: arg('method', 'hello'),
      serverSignature: arg('service', 'com.outrigger.test.EchoService:1.0'),
      args: JSON.parse(arg('args', '[]')),
      requestProps: {},
      timeout: 3000,
    },
  });
  process.stdout.write(buf.array().toString('hex') + '\n');
} else if (mode === 'response') {
  const content = Buffer.from(process.argv[3] || '', 'hex');
  const res = codec.decode(ByteBuffer.wrap(content), 'com.alipay.sofa.rpc.core.response.SofaResponse');
  const out = {
    appResponse: res.appResponse === undefined ? null : res.appResponse,
    error: res.error ? String(res.error.message || res.error) : null,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
} else {
  console.error('usage: bolt_content.js request --service S --method M [--args JSON] | response HEX');
  process.exit(2);
}
