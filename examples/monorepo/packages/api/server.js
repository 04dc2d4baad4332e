'use strict';
// Resolves `ms` from the root's node_modules (hoisted) and `@mono/util` from the workspace.
const http = require('http');
const ms = require('ms');
const { shout } = require('@mono/util');

const GREETING = 'hello from the monorepo';

http
  .createServer((req, res) => res.end(`${shout(GREETING)} (${ms(90000)})\n`))
  .listen(Number(process.env.PORT || 3000));
