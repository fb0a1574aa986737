// One service invocation with the official Dapr JavaScript SDK (npm @dapr/dapr), as a Dapr user
// writes it: DaprClient over HTTP waits for the sidecar (GET /v1.0/metadata), then
// client.invoker.invoke(appId, method, verb, body, {headers}) calls /v1.0/invoke/... .
//
//   node dapr_client.js --port PORT APP_ID METHOD [--verb POST] [--data JSON] [--header K=V ...]
//                       [--token T]
//
// Prints one JSON object on stdout: {"data": <parsed body>} or {"error": <message>}; exits 0
// either way (1 on a usage error).
"use strict";
const peerRequire = require("./peer_require");
const { DaprClient, CommunicationProtocolEnum, HttpMethod } = peerRequire("@dapr/dapr");

function parse(argv) {
  const out = { verb: "GET", headers: {}, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") out.port = argv[++i];
    else if (a === "--verb") out.verb = argv[++i];
    else if (a === "--data") out.data = JSON.parse(argv[++i]);
    else if (a === "--token") out.token = argv[++i];
    else if (a === "--header") {
      const [k, ...v] = argv[++i].split("=");
      out.headers[k] = v.join("=");
    } else out.positional.push(a);
  }
  if (!out.port || out.positional.length !== 2) {
    console.error("usage: dapr_client.js --port PORT APP_ID METHOD [options]");
    process.exit(1);
  }
  return out;
}

async function main() {
  const o = parse(process.argv.slice(2));
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: o.port,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    daprApiToken: o.token,
    logger: { level: 0 },
  });
  const verb = HttpMethod[o.verb.toUpperCase()];
  try {
    const data = await client.invoker.invoke(o.positional[0], o.positional[1], verb, o.data, {
      headers: o.headers,
    });
    console.log(JSON.stringify({ data }));
  } catch (e) {
    console.log(JSON.stringify({ error: String(e && e.message ? e.message : e) }));
  }
  await client.stop();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
