// aether-run's loader: node boots with this (`node -e`), waits for one JSON line on stdin,
// `{argv: [entry, ...args], cwd, port, inspect}`, moves to `cwd` (the release, as `npm start` runs in the
// package's directory), then runs the entry point as the main module, exactly as
// `node <entry> <args>` would (require.main, process.argv, __filename).
//
// With AETHER_RUN_FD set, the app's server listens on that inherited socket instead of binding
// its port itself: every app process accepts from the one socket aether-run owns, so no byte is
// copied on the way. The server taken is the first to listen on PORT or on the app's set `port`;
// without a set port, the first to listen on any fixed port (an app that hard-codes
// `listen(8080)` is served, and told on stderr how to say so). On SIGUSR2 those servers stop
// accepting (close) and finish what they have; the next process already accepts from the socket.
'use strict';
let wanted = null;
const fd = Number(process.env.AETHER_RUN_FD || -1);
delete process.env.AETHER_RUN_FD;
if (fd >= 0) {
  const net = require('net');
  const fs = require('fs');
  const port = Number(process.env.PORT);
  const servers = [];
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    let p = args[0];
    if (p !== null && typeof p === 'object') p = p.port;
    const n = typeof p === 'string' && !/^[0-9]+$/.test(p) ? NaN : Number(p);
    const ours = n === port || n === wanted;
    // A pipe, port 0 or no port is the app's own business; so is any port once one is taken.
    if (servers.length > 0 || !(n > 0) || (!ours && wanted !== null)) return listen.apply(this, args);
    if (!ours) {
      process.stderr.write(`[aether-run] the app listens on port ${n}, not on PORT (${port}): serving it there; ` +
        `listen on process.env.PORT, or set "aether": {"port": ${n}} in package.json to say this is its port\n`);
    }
    servers.push(this);
    this.once('listening', () => {
      try { fs.writeSync(4, 'listening\n'); fs.closeSync(4); } catch (e) { /* aether-run is gone */ }
    });
    const cb = args.find((a) => typeof a === 'function');
    return cb ? listen.call(this, { fd }, cb) : listen.call(this, { fd });
  };
  process.on('SIGUSR2', () => {
    for (const s of servers) s.close();
    // The next process opens the inspector on the same port once this one lets it go.
    const insp = require('inspector');
    if (insp.url()) insp.close();
  });
}

// `inspect: "127.0.0.1:9229"` (cargo xtask debug): node's inspector, opened once the port is
// free: the process this one replaces holds it until it is told to drain (SIGUSR2, above).
function openInspector(addr, deadline) {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i);
  const port = Number(addr.slice(i + 1));
  const probe = require('net').connect(port, host);
  probe.on('connect', () => {
    probe.destroy();
    if (Date.now() < deadline) setTimeout(() => openInspector(addr, deadline), 20).unref();
    else process.stderr.write(`[aether-run] the inspector's port ${addr} stayed taken; running without it\n`);
  });
  probe.on('error', () => require('inspector').open(port, host));
}
const stdin = process.stdin;
let buf = '';
stdin.on('data', (d) => {
  buf += d;
  const i = buf.indexOf('\n');
  if (i < 0) return;
  stdin.removeAllListeners('data');
  stdin.pause();
  stdin.destroy();
  const line = JSON.parse(buf.slice(0, i));
  if (line.cwd) process.chdir(line.cwd);
  if (line.port) wanted = Number(line.port);
  if (line.inspect) openInspector(line.inspect, Date.now() + 30000);
  const a = line.argv;
  process.argv = [process.argv[0], require('path').resolve(a[0]), ...a.slice(1)];
  require('module').runMain();
});
