export {
  Chunker,
  type ChunkerParams,
  chunkStream,
  DEFAULT_CHUNKER_PARAMS,
  findCut,
  validateChunkerParams,
} from './fastcdc.js';
export { GEAR_SEED_BYTES, GearScanner, gearScannerFor, gearTable } from './gear.js';
export { isAllZero } from './zero.js';
