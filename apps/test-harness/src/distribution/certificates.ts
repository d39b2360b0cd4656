import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runTool } from './tools.ts';

/** Files of a generated certificate authority and a server certificate it signed. */
export interface TestCertificates {
  /** PEM of the CA certificate: trust this to talk to the server. */
  caFile: string;
  caKeyFile: string;
  /** PEM of the server certificate (SAN IP:127.0.0.1, DNS:localhost). */
  certFile: string;
  keyFile: string;
}

/** Certificates live a day: long enough for any test run, short enough to never matter. */
const VALIDITY_DAYS = '2';

/**
 * Generates a throwaway CA and a server certificate for 127.0.0.1 and localhost in `dir`, with the
 * openssl CLI. Keys are EC P-256 to keep generation fast.
 */
export async function generateCertificates(dir: string): Promise<TestCertificates> {
  const caFile = join(dir, 'ca.crt');
  const caKeyFile = join(dir, 'ca.key');
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  const csrFile = join(dir, 'server.csr');
  const extensionsFile = join(dir, 'server.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await runTool('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    caKeyFile,
    '-out',
    caFile,
    '-days',
    VALIDITY_DAYS,
    '-subj',
    '/CN=ocipull test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await runTool('openssl', ['req', ...ec, '-keyout', keyFile, '-out', csrFile, '-subj', '/CN=127.0.0.1']);
  await writeFile(
    extensionsFile,
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await runTool('openssl', [
    'x509',
    '-req',
    '-in',
    csrFile,
    '-CA',
    caFile,
    '-CAkey',
    caKeyFile,
    '-CAcreateserial',
    '-out',
    certFile,
    '-days',
    VALIDITY_DAYS,
    '-extfile',
    extensionsFile,
  ]);
  return { caFile, caKeyFile, certFile, keyFile };
}

/** Generates a self-signed RSA certificate and key for signing tokens (RS256) in `dir`. */
export async function generateSigningCertificate(
  dir: string,
): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, 'token-signer.crt');
  const keyFile = join(dir, 'token-signer.key');
  await runTool('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    VALIDITY_DAYS,
    '-subj',
    '/CN=ocipull token signer',
  ]);
  return { certFile, keyFile };
}
