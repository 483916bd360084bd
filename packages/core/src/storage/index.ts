export { FileObjectStore } from './file-store.js';
export { assertInsideFileRoots, parseFileRoots } from './file-roots.js';
export { MAX_KEY_BYTES, validateKeyPrefix, validateObjectKey } from './object-key.js';
export {
  DEFAULT_GET_BYTES_MAX,
  type GetBytesOptions,
  type ObjectBody,
  type ObjectEntry,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from './object-store.js';
export { openObjectStore, type OpenObjectStoreOptions } from './open-object-store.js';
export { DEFAULT_RETRY_POLICY, isTransientError, type RetryPolicy } from './retry.js';
export { readS3ConnectionFromEnv, type S3ConnectionOptions } from './s3-connection.js';
export type { S3ObjectStore, S3StoreOptions } from './s3-store.js';
export { isObjectNotFound, ObjectNotFoundError } from './storage-errors.js';
export { parseStorageUrl, validateBucketName, type StorageLocation } from './storage-url.js';
