import type { Writable } from 'node:stream';

/** The first error a watched output stream reported, if any. */
export interface OutputState {
  error: NodeJS.ErrnoException | undefined;
}

const watched = new WeakMap<Writable, OutputState>();

/**
 * Listens for the 'error' events of an output stream (stdout, stderr) and keeps the first. A failed
 * write to a pipe or file is reported as an event, not thrown, and an event nobody listens for crashes
 * the process with a stack trace: `ocipull inspect REF | head -1` did, once `head` closed the pipe
 * (EPIPE). Later writes to the broken stream are dropped. The listener stays for the life of the
 * stream, since the event can arrive after the command has returned; watching a stream twice (`main`
 * runs itself for `help pull`) adds no second one.
 */
export function watchOutput(stream: Writable): OutputState {
  const known = watched.get(stream);
  if (known) return known;
  const state: OutputState = { error: undefined };
  watched.set(stream, state);
  stream.on('error', (error: NodeJS.ErrnoException) => {
    state.error ??= error;
  });
  return state;
}

/** True for the error of a write to a pipe or socket whose reader has gone (`| head`, `| grep -q`). */
export function isClosedPipe(error: NodeJS.ErrnoException | undefined): boolean {
  return error?.code === 'EPIPE';
}
