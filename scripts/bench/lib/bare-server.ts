import { createServer } from 'node:http';

/**
 * The floor of what any HTTP handler in this process can do: a bare `node:http` server on 127.0.0.1 that
 * answers every request with the same body. Benchmarks load it with the same settings as the endpoint under
 * test and quote the endpoint as a multiple of it, which cancels out most of the machine and the load tool.
 */
export interface BareServer {
  url: string;
  close(): Promise<void>;
}

export async function startBareServer(body: string | Buffer, opts: { status?: number; headers?: Record<string, string> } = {}): Promise<BareServer> {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  const headers = { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': String(payload.length), ...opts.headers };
  const server = createServer((req, res) => {
    req.resume(); // drain any request body so that the keep-alive connection stays usable
    res.writeHead(opts.status ?? 200, headers);
    res.end(payload);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
