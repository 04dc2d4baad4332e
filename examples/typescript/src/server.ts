// A TypeScript server with types, an interface and an import of another .ts file: it runs as
// written (tsx strips the types as it loads), on PORT as aether-run sets it.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { greeting } from './greeting.ts';

const port: number = Number(process.env.PORT ?? 3000);

function handle(_req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('content-type', 'text/plain');
  res.end(`${greeting.text}\n`);
}

createServer(handle).listen(port, () => console.log(`typescript example listening on ${port}`));
