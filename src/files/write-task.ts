import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import type { IdHasher } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import type { BlobTaskOutput, BlobWorkerContext } from '../repo/blob-task.js';
import { asBuffer } from '../util/bytes.js';
import { verifyFile } from './browse.js';
import {
  applyFileMetadata,
  createFlags,
  creationMode,
  type MetadataOptions,
  replacingSync,
} from './metadata.js';
import type { TreeEntry } from './tree.js';

/*
 * The blob task (see repo/blob-task.ts) that writes small restored files on the blob
 * workers: create, write, metadata and close are synchronous calls there, a batch of files
 * to a message, so neither their cost nor a trip through the thread pool per call falls on
 * the main thread, which only walks trees and fetches chunks. `finishFile` also serves the
 * main thread's large files.
 */

export interface WriteTaskInit {
  meta: MetadataOptions;
  /** Read every file back and check each chunk against its ID. */
  verify: boolean;
}

/** What restoring a regular file needs of its tree entry. */
export type RestoredFile = Pick<
  TreeEntry,
  'mode' | 'uid' | 'gid' | 'mtimeNs' | 'size' | 'xattrs' | 'content'
>;

export interface FileToWrite {
  dest: Uint8Array;
  entry: RestoredFile;
  /** Its directory is setgid: the file gets the directory's group. */
  groupInherited: boolean;
  /** Each content part's bytes (shared memory, read only), none for a hole. */
  chunks: (Uint8Array | undefined)[];
}

/** For each file: why it could not be restored, or null. */
export type WriteResults = (string | null)[];

export function createTask(init: WriteTaskInit, worker: BlobWorkerContext) {
  return (files: FileToWrite[]): BlobTaskOutput<WriteResults> => ({
    result: files.map((file) => {
      try {
        writeFile(file, init, worker.hashId);
        return null;
      } catch (err) {
        return failureText(err);
      }
    }),
    blobs: [],
  });
}

function writeFile(file: FileToWrite, init: WriteTaskInit, hashId: IdHasher): void {
  const dest = asBuffer(file.dest);
  const entry = reviveEntry(file.entry);
  const fd = replacingSync(dest, () =>
    openSync(dest, createFlags(init.verify), creationMode(entry)),
  );
  try {
    let at = 0;
    for (const [i, part] of (entry.content ?? []).entries()) {
      const data = file.chunks[i];
      if (data) writeFully(fd, data, at);
      at += part.length;
    }
    finishFile(fd, entry, file.groupInherited, init, hashId);
  } finally {
    closeSync(fd);
  }
}

function writeFully(fd: number, data: Uint8Array, at: number): void {
  for (let done = 0; done < data.length; ) {
    done += writeSync(fd, data, done, data.length - done, at + done);
  }
}

/**
 * After a file's chunks are written: its size where it ends in a hole (left sparse), the
 * check of what was written when verifying, then its metadata.
 */
export function finishFile(
  fd: number,
  entry: RestoredFile,
  groupInherited: boolean,
  opts: WriteTaskInit,
  hashId: IdHasher,
): void {
  let dataEnd = 0;
  let offset = 0;
  for (const part of entry.content ?? []) {
    offset += part.length;
    if (part.id) dataEnd = offset;
  }
  if (entry.size > dataEnd) ftruncateSync(fd, entry.size);
  if (opts.verify) verifyFile(hashId, fd, entry);
  applyFileMetadata(fd, entry, opts.meta, groupInherited);
}

/** Buffers where a message to the worker left plain Uint8Arrays. */
function reviveEntry(entry: RestoredFile): RestoredFile {
  return {
    ...entry,
    xattrs: entry.xattrs.map((x) => ({ name: asBuffer(x.name), value: asBuffer(x.value) })),
    content: entry.content?.map((p) => ({ id: p.id && asBuffer(p.id), length: p.length })),
  };
}

/** A failure as reported against the file's path (which Node's messages would repeat). */
export function failureText(err: unknown): string {
  if (err instanceof CairnError) return err.message;
  const e = err as NodeJS.ErrnoException;
  // Node's message repeats the path (mangled when it is not UTF-8); the caller names it.
  if (e?.code && typeof e.message === 'string') return e.message.split(',')[0]!;
  return e?.message ?? String(err);
}
