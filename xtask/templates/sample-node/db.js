// A query to Postgres with nothing but Node's own modules, so the sample needs no `npm install`
// and deploys offline. Real apps use `pg` (node-postgres); this speaks just enough of the
// protocol (v3) for `SELECT 1`: startup, SCRAM-SHA-256, MD5 or cleartext auth, a simple query.
'use strict';
const net = require('net');
const crypto = require('crypto');

function message(type, body) {
  const head = Buffer.alloc(type ? 5 : 4);
  if (type) head.write(type, 0);
  head.writeInt32BE(body.length + 4, type ? 1 : 0);
  return Buffer.concat([head, body]);
}
const cstr = (s) => Buffer.from(s + '\0');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();

// Resolves 'ok' when `SELECT 1` answers 1; rejects with the server's or the socket's error.
function query1(url, timeoutMs = 2000) {
  const u = new URL(url);
  const user = decodeURIComponent(u.username);
  const password = decodeURIComponent(u.password);
  const database = decodeURIComponent(u.pathname.slice(1)) || user;
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port || 5432) });
    s.setTimeout(timeoutMs, () => s.destroy(new Error('timed out')));
    const done = (err, v) => { s.end(message('X', Buffer.alloc(0))); err ? reject(err) : resolve(v); };
    s.on('error', reject);
    let buf = Buffer.alloc(0);
    let scram = null;
    let answer = null;
    s.on('connect', () => {
      const params = Buffer.concat([cstr('user'), cstr(user), cstr('database'), cstr(database), Buffer.from([0])]);
      const version = Buffer.alloc(4);
      version.writeInt32BE(196608);
      s.write(message('', Buffer.concat([version, params])));
    });
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const type = String.fromCharCode(buf[0]);
        const body = buf.subarray(5, 1 + buf.readInt32BE(1));
        buf = buf.subarray(1 + buf.readInt32BE(1));
        if (type === 'E') {
          const m = body.toString().split('\0').find((f) => f.startsWith('M'));
          return done(new Error(m ? m.slice(1) : 'server error'));
        }
        if (type === 'R') {
          const code = body.readInt32BE(0);
          if (code === 3) s.write(message('p', cstr(password)));
          else if (code === 5) {
            const inner = crypto.createHash('md5').update(password + user).digest('hex');
            const outer = crypto.createHash('md5').update(inner).update(body.subarray(4, 8)).digest('hex');
            s.write(message('p', cstr('md5' + outer)));
          } else if (code === 10) {
            const nonce = crypto.randomBytes(18).toString('base64');
            scram = { bare: 'n=,r=' + nonce, nonce };
            const first = Buffer.from('n,,' + scram.bare);
            const len = Buffer.alloc(4);
            len.writeInt32BE(first.length);
            s.write(message('p', Buffer.concat([cstr('SCRAM-SHA-256'), len, first])));
          } else if (code === 11) {
            const server = body.subarray(4).toString();
            const f = Object.fromEntries(server.split(',').map((kv) => [kv[0], kv.slice(2)]));
            if (!f.r || !f.r.startsWith(scram.nonce)) return done(new Error('SCRAM: bad server nonce'));
            const salted = crypto.pbkdf2Sync(password, Buffer.from(f.s, 'base64'), Number(f.i), 32, 'sha256');
            const clientKey = hmac(salted, 'Client Key');
            const withoutProof = 'c=biws,r=' + f.r;
            const auth = scram.bare + ',' + server + ',' + withoutProof;
            const sig = hmac(crypto.createHash('sha256').update(clientKey).digest(), auth);
            const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
            scram.serverSig = hmac(hmac(salted, 'Server Key'), auth).toString('base64');
            s.write(message('p', Buffer.from(withoutProof + ',p=' + proof.toString('base64'))));
          } else if (code === 12) {
            if (body.subarray(4).toString() !== 'v=' + scram.serverSig) return done(new Error('SCRAM: the server did not prove it knows the password'));
          } else if (code !== 0) return done(new Error('unsupported authentication ' + code));
        } else if (type === 'Z') {
          if (answer !== null) return done(null, answer === '1' ? 'ok' : 'unexpected answer ' + answer);
          s.write(message('Q', cstr('SELECT 1')));
          answer = '';
        } else if (type === 'D') {
          const len = body.readInt32BE(2);
          answer = body.subarray(6, 6 + len).toString();
        }
      }
    });
  });
}

module.exports = { query1 };
