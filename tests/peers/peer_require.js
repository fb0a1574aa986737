'use strict';
// Resolves the peers' npm packages from the project's tool folder (.tools/node, installed by
// scripts/install-tools.sh), or from OUTRIGGER_TOOLS when set, falling back to normal lookup.
const path = require('path');
const { createRequire } = require('module');

const tools = process.env.OUTRIGGER_TOOLS || path.resolve(__dirname, '..', '..', '.tools');
const fromTools = createRequire(path.join(tools, 'node', 'package.json'));

module.exports = name => {
  try {
    return fromTools(name);
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
    return require(name);
  }
};

// sofa-rpc-node logs through this; keep stdout for the machine-readable lines.
module.exports.stderrLogger = {
  debug() {},
  info: (...a) => process.env.PEER_VERBOSE && console.error(...a),
  warn: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
};
