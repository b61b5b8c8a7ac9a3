import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Young-generation collections on a blob worker, one per COLLECT_EVERY bytes of blobs it
 * sealed or opened. node:crypto gives every encryption and decryption output a buffer of its
 * own, allocated outside V8's heap, so V8 waits for tens of MiB of them to die before it
 * collects; glibc keeps what they used in the thread's malloc arena, resident. Restoring the
 * 2 GiB bench image, smaps showed three arenas of 36-40 MiB each; a minor collection every
 * 2 MiB took peak RSS from 221-227 MB to 157-162 (4 MiB: 163-168, 8 MiB: 178), with no
 * change in time (4.06-4.36 s against 4.05-4.14, alternate runs). Backing up that image:
 * 206-214 MB against 274-279, 10.2-10.9 s against 10.4 s. Backing up and restoring the
 * bench tree (small blobs, whose garbage is not the bulk of it) kept their times and peaks
 * within the runs' spread (backup 27.3-29.0 s, 289-305 MB, against 28.1-28.5 s, 263-291 MB).
 *
 * `gc` exists only with --expose-gc, a V8 flag: set now, it gives a context made afterwards
 * the function (a worker cannot be started with V8 flags of its own). Should a runtime not
 * honour the flag, nothing is collected early and nothing else changes.
 */
const COLLECT_EVERY = 2 << 20;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('typeof gc === "function" ? gc : undefined') as
  | ((opts: { type: 'minor' }) => void)
  | undefined;
let owed = 0;

/** Notes `bytes` of short-lived buffers made; collects when enough are owed. */
export function madeGarbage(bytes: number): void {
  owed += bytes;
  if (owed < COLLECT_EVERY) return;
  owed = 0;
  gc?.({ type: 'minor' });
}
