import { damaged } from '../source.js';

/*
 * ext directory blocks: linked records `inode u32 ‖ rec_len u16 ‖ name_len u8 ‖ file_type u8
 * ‖ name`, each rec_len bytes long. Hashed (htree) directories keep the same records in
 * their leaf blocks; their index blocks look like one unused record (inode 0) spanning the
 * block, and the root's index hides inside `..`'s record, so reading every block linearly
 * gives every name. A metadata_csum tail is an unused 12-byte record too.
 */

export interface RawDirent {
  inode: number;
  name: Buffer;
  /** The file_type byte (0 when the filesystem does not record types). */
  fileType: number;
}

/** file_type of a socket: sockets are not files a snapshot stores. */
export const FT_SOCKET = 6;

/** Records of one directory block (or of an inline directory's region). */
export function* dirRecords(block: Buffer, fileTypes: boolean, what: string): Generator<RawDirent> {
  for (let at = 0; at + 8 <= block.length; ) {
    const inode = block.readUInt32LE(at);
    const recLen = recordLength(block.readUInt16LE(at + 4), block.length);
    const nameLen = fileTypes ? block[at + 6]! : block.readUInt16LE(at + 6);
    if (recLen < 8 || recLen % 4 !== 0 || at + recLen > block.length || 8 + nameLen > recLen) {
      throw damaged(`${what}: damaged directory record at byte ${at}`);
    }
    if (inode !== 0 && nameLen > 0) {
      const name = block.subarray(at + 8, at + 8 + nameLen);
      const dots = name.length <= 2 && name.every((b) => b === 0x2e);
      if (!dots) yield { inode, name, fileType: fileTypes ? block[at + 7]! : 0 };
    }
    at += recLen;
  }
}

/** rec_len as the kernel decodes it: 64 KiB blocks store 65536 as 0 or 65535. */
function recordLength(raw: number, blockSize: number): number {
  if (blockSize < 65536) return raw;
  if (raw === 65535 || raw === 0) return 65536;
  return (raw & 65532) | ((raw & 3) << 16);
}
