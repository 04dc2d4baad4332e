// What a NestJS-style build leaves in dist/: it listens on a fixed port, not PORT, and reads a
// file relative to the directory it starts in (as `npm start` starts it in the package's).
'use strict';
const http = require('http');
const fs = require('fs');

const VERSION = 'v1';

http
  .createServer((req, res) => {
    const motd = fs.readFileSync('public/motd.txt', 'utf8').trim();
    const flags = process.execArgv.filter((a) => !a.startsWith('-e') && a.startsWith('--')).join(' ');
    res.setHeader('content-type', 'text/plain');
    res.end(`${VERSION} ${process.env.NODE_ENV} ${motd} [${flags}]\n`);
  })
  .listen(8080, () => console.log('listening on 8080'));
