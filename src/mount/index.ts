export { type Mounted, type MountOptions, mountRepository } from './mount.js';
export { isMounted, type MountEntry, mountAt, mountTable } from './mount-table.js';
