export { ExitCode, exitCodeFor, hintFor } from './exit-codes.ts';
export type { MainOptions } from './main.ts';
export { main, USAGE } from './main.ts';
