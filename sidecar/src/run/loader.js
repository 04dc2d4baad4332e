// aether-run's loader: node boots with this (`node -e`), waits for one JSON line on stdin that
// names the entry point and its arguments, then runs it as the main module, exactly as
// `node <entry> <args>` would (require.main, process.argv, __filename).
//
// With AETHER_RUN_FD set, the app's server on PORT listens on that inherited socket instead of
// binding the port itself: every app process accepts from the one socket aether-run owns, so no
// byte is copied on the way. On SIGUSR2 those servers stop accepting (close) and finish what
// they have; the next process is already accepting from the same socket.
'use strict';
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
    if (servers.length > 0 || Number(p) !== port) return listen.apply(this, args);
    servers.push(this);
    this.once('listening', () => {
      try { fs.writeSync(4, 'listening\n'); fs.closeSync(4); } catch (e) { /* aether-run is gone */ }
    });
    const cb = args.find((a) => typeof a === 'function');
    return cb ? listen.call(this, { fd }, cb) : listen.call(this, { fd });
  };
  process.on('SIGUSR2', () => { for (const s of servers) s.close(); });
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
  const a = JSON.parse(buf.slice(0, i));
  process.argv = [process.argv[0], require('path').resolve(a[0]), ...a.slice(1)];
  require('module').runMain();
});
