// Aether sample app: a tiny HTTP server with a version line and a live counter.
// Edit VERSION, then `cargo xtask hot-upload demo examples/sample-node` and `hot-patch`.
'use strict';
const http = require('http');
const net = require('net');

const VERSION = 'v1';
const port = Number(process.env.PORT || 3000);
const started = new Date().toISOString();
let requests = 0;

// Reports whether the database answers, without failing when there is none.
function databaseStatus() {
  const url = process.env.DATABASE_URL;
  if (!url) return Promise.resolve('not configured');
  let host, dbPort;
  try {
    const u = new URL(url);
    host = u.hostname;
    dbPort = Number(u.port || 5432);
  } catch (e) {
    return Promise.resolve('invalid DATABASE_URL');
  }
  return new Promise((resolve) => {
    const s = net.connect({ host, port: dbPort, timeout: 500 }, () => { s.destroy(); resolve('reachable'); });
    s.on('error', () => resolve('unreachable'));
    s.on('timeout', () => { s.destroy(); resolve('unreachable'); });
  });
}

const server = http.createServer(async (req, res) => {
  requests += 1;
  const db = await databaseStatus();
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`version: ${VERSION}\nrequests: ${requests}\nstarted: ${started}\ndatabase: ${db}\n`);
});

server.listen(port, () => console.log(`sample app ${VERSION} listening on ${port}`));
// Let `node --watch` restart us promptly: close the listening socket on SIGTERM.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
