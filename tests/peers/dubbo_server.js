#!/usr/bin/env node
'use strict';
// A Dubbo 2 provider built on a third-party Hessian2 codec (npm hessian.js), for Outrigger's
// peer tests: it frames Dubbo itself (16-byte header) and lets hessian.js read and write the
// bodies. Prints its port on stdout once listening, then serves until killed.
//
//   node dubbo_server.js [--port 0]
//
// Any service path is accepted. Methods: sayHello(name) -> "hello " + name; echo(x) -> x;
// plus(a, b) -> a + b; fail(message) -> throws java.lang.IllegalStateException(message);
// sleep(ms) -> "slept <ms>" after ms; and the generic $invoke(method, types, args) of any of
// these. Other methods get status 70 (SERVICE_ERROR). Heartbeats (flag 0xE2) are answered
// 0x22/20. Responses carry attachments (flags 3-5) only to consumers whose Dubbo version is
// 2.0.2-2.0.99, as Apache Dubbo does.
const net = require('net');
const peerRequire = require('./peer_require');
const hessian = peerRequire('hessian.js');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const methods = {
  sayHello: name => 'hello ' + name,
  echo: x => x,
  plus: (a, b) => a + b,
  fail: message => { const e = new Error(message || 'failed on purpose'); e.javaClass = 'java.lang.IllegalStateException'; throw e; },
  sleep: ms => new Promise(resolve => setTimeout(() => resolve('slept ' + ms), Number(ms))),
};

// Number of parameters in a JVM descriptor list such as "Ljava/lang/String;[I".
function countParams(desc) {
  let n = 0;
  for (let i = 0; i < desc.length; n++) {
    while (desc[i] === '[') i++;
    if (desc[i] === 'L') i = desc.indexOf(';', i) + 1; else i++;
    if (i === 0) throw new Error('bad descriptor ' + desc);
  }
  return n;
}

function supportsAttachments(version) {
  const parts = String(version || '').split('.');
  let v = 0;
  parts.forEach((p, i) => { const d = parseInt(p, 10); if (!isNaN(d)) v += d * Math.pow(100, parts.length - i - 1); });
  if (parts.length === 3) v *= 100;
  return v >= 2000200 && v <= 2009900;
}

function header(flag, status, idBytes, bodyLength) {
  const h = Buffer.alloc(16);
  h.writeUInt16BE(0xdabb, 0);
  h[2] = flag;
  h[3] = status;
  idBytes.copy(h, 4);
  h.writeInt32BE(bodyLength, 12);
  return h;
}

function javaException(err) {
  return {
    $class: err.javaClass || 'java.lang.RuntimeException',
    $: {
      detailMessage: String(err.message),
      stackTrace: { $class: '[java.lang.StackTraceElement', $: [] },
    },
  };
}

async function handleRequest(socket, idBytes, body) {
  const d = new hessian.DecoderV2(body);
  const dubboVersion = d.read();
  const path = d.read();
  d.read(); // service version
  let method = d.read();
  const desc = d.read();
  let args = [];
  for (let i = countParams(desc); i > 0; i--) args.push(d.read());
  if (method === '$invoke') {
    method = args[0];
    args = args[2] || [];
  }
  const fn = methods[method];
  if (!fn) {
    const e = new hessian.EncoderV2();
    e.write(`no method ${method} on ${path}`);
    const b = e.get();
    socket.write(Buffer.concat([header(0x02, 70, idBytes, b.length), b]));
    return;
  }
  const withAttachments = supportsAttachments(dubboVersion);
  const e = new hessian.EncoderV2();
  try {
    const result = await fn(...args);
    if (result === null || result === undefined) {
      e.write(withAttachments ? 5 : 2);
    } else {
      e.write(withAttachments ? 4 : 1);
      e.write(result);
    }
  } catch (err) {
    e.write(withAttachments ? 3 : 0);
    e.write(javaException(err));
  }
  if (withAttachments) e.write({ dubbo: '2.0.2' });
  const b = e.get();
  socket.write(Buffer.concat([header(0x02, 20, idBytes, b.length), b]));
}

function serve(socket) {
  let buf = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', chunk => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 16) {
      if (buf.readUInt16BE(0) !== 0xdabb) { socket.destroy(); return; }
      const len = buf.readInt32BE(12);
      if (len < 0 || len > 8 * 1024 * 1024) { socket.destroy(); return; }
      if (buf.length < 16 + len) return;
      const flag = buf[2];
      const idBytes = Buffer.from(buf.subarray(4, 12));
      const body = Buffer.from(buf.subarray(16, 16 + len));
      buf = buf.subarray(16 + len);
      if (!(flag & 0x80)) continue; // a reply to our nothing: ignore
      if (flag & 0x20) {
        if (flag & 0x40) socket.write(Buffer.concat([header(0x22, 20, idBytes, 1), Buffer.from('N')]));
        continue;
      }
      handleRequest(socket, idBytes, body).catch(err => {
        console.error('dubbo_server: bad request:', err.message);
        socket.destroy();
      });
    }
  });
}

const server = net.createServer(serve);
server.listen(Number(arg('port', '0')), '127.0.0.1', () => {
  process.stdout.write(server.address().port + '\n');
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
