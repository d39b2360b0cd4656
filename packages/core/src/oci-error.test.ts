import { describe, expect, it } from 'vitest';
import { AbortedError, ErrorCode, isOciError, OciError, throwIfAborted } from './index.ts';

describe('OciError', () => {
  it('carries a stable code, message, cause and retryable verdict', () => {
    const cause = new Error('socket hang up');
    const error = new OciError(ErrorCode.Network, 'connection reset', { cause, retryable: true });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('ERR_NETWORK');
    expect(error.message).toBe('connection reset');
    expect(error.cause).toBe(cause);
    expect(error.retryable).toBe(true);
    expect(new OciError(ErrorCode.Io, 'x').retryable).toBe(false);
  });

  it('is recognised across copies of the package by its Symbol.for brand', () => {
    const error = new OciError(ErrorCode.Io, 'disk');
    const foreign = Object.create(null) as Record<symbol, unknown>;
    foreign[Symbol.for('ocipull.error')] = true;
    expect(OciError.isInstance(error)).toBe(true);
    expect(OciError.isInstance(foreign)).toBe(true);
    expect(OciError.isInstance(new Error('plain'))).toBe(false);
    expect(OciError.isInstance(null)).toBe(false);
    expect(isOciError(error, ErrorCode.Io)).toBe(true);
    expect(isOciError(error, ErrorCode.Network)).toBe(false);
  });

  it('has unique codes, each spelled ERR_ and upper snake case', () => {
    const codes = Object.values(ErrorCode);
    expect(new Set(codes).size).toBe(codes.length);
    for (const code of codes) expect(code).toMatch(/^ERR_[A-Z0-9_]+$/);
  });

  it('turns a fired AbortSignal into ERR_ABORTED with the reason as cause', () => {
    const controller = new AbortController();
    expect(() => throwIfAborted(controller.signal)).not.toThrow();
    controller.abort(new Error('user pressed ^C'));
    try {
      throwIfAborted(controller.signal);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(AbortedError);
      expect((error as AbortedError).code).toBe('ERR_ABORTED');
      expect(((error as AbortedError).cause as Error).message).toBe('user pressed ^C');
    }
  });
});
