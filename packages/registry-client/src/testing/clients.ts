import type { Readable } from 'node:stream';
import type { OciError } from '@ocipull/core';
import {
  createRegistryClient,
  type RegistryClient,
  type RegistryClientOptions,
  type RegistryEvent,
} from '../client.ts';

/**
 * Registry clients for tests: made with no auth files, quick retries and every event recorded in
 * `events`; `close()` closes all of them (call it from `afterAll`).
 */
export function testClients(defaults: RegistryClientOptions = {}) {
  const made: RegistryClient[] = [];
  const events: RegistryEvent[] = [];
  return {
    events,
    client(options: RegistryClientOptions = {}): RegistryClient {
      const registryClient = createRegistryClient({
        dockerConfig: false,
        retryPolicy: { baseMs: 20, maxMs: 100 },
        onEvent: (event) => events.push(event),
        ...defaults,
        ...options,
      });
      made.push(registryClient);
      return registryClient;
    },
    async close(): Promise<void> {
      await Promise.all(made.map((registryClient) => registryClient.close()));
    },
  };
}

/** What `promise` rejects with; fails the test when it resolves. */
export async function rejection<E = Error>(promise: Promise<unknown>): Promise<E> {
  try {
    await promise;
  } catch (error) {
    return error as E;
  }
  throw new Error('expected a rejection');
}

/** Reads a stream to its end or error: the bytes that arrived and how it ended. */
export async function drain(stream: Readable): Promise<{ bytes: Buffer; error?: OciError }> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return { bytes: Buffer.concat(chunks) };
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error: error as OciError };
  }
}
