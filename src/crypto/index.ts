export { AesGcmSealer, ChecksumSealer, type Sealer } from './aead.js';
export { type IdHasher, keyedIdHasher, plainIdHasher } from './ids.js';
export {
  DEFAULT_KDF_PARAMS,
  DERIVED_KEY_LENGTH,
  deriveKey,
  KDF_LIMITS,
  type KdfParams,
  kdfParamsProblem,
} from './kdf.js';
export {
  createKeyFile,
  type KeyFileInfo,
  type KeyFileMeta,
  openKeyFile,
  readKeyFileInfo,
} from './keyfile.js';
export {
  decodeMasterKey,
  ENCODED_MASTER_KEY_LENGTH,
  encodeMasterKey,
  generateMasterKey,
  type MasterKey,
} from './masterkey.js';
