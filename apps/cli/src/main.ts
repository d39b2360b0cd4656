import { parseArgs } from 'node:util';

/** The top-level usage text of `ocipull`. */
export const USAGE = `Usage: ocipull <command> [options]

Pull OCI and Docker images into a verified, content-addressed cache and extract them.

Commands:
  pull REF        download an image into the cache (and optionally a rootfs)
  images          list cached images
  inspect REF     show an image's manifest, config and layers
  rm REF          remove an image record from the cache
  prune           remove unreferenced blobs and layers
  verify          re-hash cached blobs
  demo            pull a built-in sample image from an in-process registry

Options:
  -h, --help      show this help
  --version       print the version
`;

/** Runs the CLI with the given arguments and resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 1;
  }
  process.stderr.write(`ocipull: unknown command '${positionals[0]}'\n\n${USAGE}`);
  return 1;
}
