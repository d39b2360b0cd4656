export type { Digest } from '@ocipull/core';
export type { DigestInput, DigestOfOptions, DigestResult } from './digest-of.ts';
export { digestOf, digestOfFile, measure } from './digest-of.ts';
export { DigestMismatchError, InvalidDigestError, SizeMismatchError } from './errors.ts';
export { createHasher, DEFAULT_ALGORITHM, Hasher } from './hasher.ts';
export type { DigestAlgorithm } from './parse-digest.ts';
export { digestAlgorithm, digestEncoded, isDigest, parseDigest } from './parse-digest.ts';
export type { ResumeVerifierOptions, VerifierOptions } from './verifier.ts';
export {
  createVerifier,
  createVerifyStream,
  resumeVerifier,
  Verifier,
  VerifyStream,
  verifyBytes,
} from './verifier.ts';
