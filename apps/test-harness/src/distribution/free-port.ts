import { createServer } from 'node:net';

/**
 * Asks the kernel for a free TCP port on 127.0.0.1 by listening on port 0 and closing. Another process
 * may take it before it is used: callers retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
