// Aether sample app: a tiny HTTP server with a version line and a live counter.
// Edit VERSION, then `cargo xtask hot-upload demo examples/sample-node` and `hot-patch`.
'use strict';
const http = require('http');
const { query1 } = require('./db');

const VERSION = 'v1';
const port = Number(process.env.PORT || 3000);
const started = new Date().toISOString();
let requests = 0;

// Whether the database answers a query, without failing when there is none. One check at a
// time, reused for two seconds: requests must not each open a connection.
let dbCheck = null;
function databaseStatus() {
  const url = process.env.DATABASE_URL;
  if (!url) return Promise.resolve('not configured');
  if (!dbCheck || Date.now() - dbCheck.at > 2000) {
    dbCheck = { at: Date.now(), status: query1(url).catch((e) => 'error: ' + e.message) };
  }
  return dbCheck.status;
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
