// An ordinary express app: it listens on PORT, as every app deployed by aether-dev does.
'use strict';
const express = require('express');

const GREETING = 'hello from express';
const app = express();

app.get('/', (req, res) => res.type('text').send(`${GREETING}\n`));
app.get('/healthz', (req, res) => res.send('ok'));

const port = Number(process.env.PORT || 3000);
app.listen(port, () => console.log(`express example listening on ${port}`));
