/**
 * One error family for the whole library. The `code` decides the process exit code in the
 * CLI (restic's numbers); library code never exits or prints by itself.
 */
export type ErrorCode =
  | 'Fatal'
  | 'Usage'
  | 'RepoNotFound'
  | 'RepoExists'
  | 'Locked'
  | 'WrongPassword'
  | 'NoPassword'
  | 'NotFound'
  | 'Damaged'
  | 'Interrupted';

export class CairnError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode = 'Fatal',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CairnError';
  }
}

const exitCodes: Record<ErrorCode, number> = {
  Fatal: 1,
  Usage: 1,
  RepoNotFound: 10,
  RepoExists: 1,
  Locked: 11,
  WrongPassword: 12,
  NoPassword: 1,
  NotFound: 1,
  Damaged: 1,
  Interrupted: 130,
};

export function exitCodeOf(err: unknown): number {
  return err instanceof CairnError ? exitCodes[err.code] : 1;
}

/** Short hex form used in messages: enough to find the object, short enough to read. */
export function shortHex(id: Uint8Array | string): string {
  const hex = typeof id === 'string' ? id : Buffer.from(id).toString('hex');
  return hex.slice(0, 8);
}
