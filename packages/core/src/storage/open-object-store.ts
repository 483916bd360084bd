import type { Logger } from '../log.js';
import { FileObjectStore } from './file-store.js';
import type { ObjectStore } from './object-store.js';
import { mergeConnection, readS3ConnectionFromEnv } from './s3-connection.js';
import type { S3StoreOptions } from './s3-store.js';
import { parseStorageUrl } from './storage-url.js';

export interface OpenObjectStoreOptions {
  /** Folder that relative paths are resolved against. Default: the process's working folder. */
  cwd?: string;
  /** Environment that S3 settings are read from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /**
   * Settings for `s3://` URLs. Connection fields given here win over the environment
   * (`S3_ENDPOINT`, `S3_REGION`, `S3_FORCE_PATH_STYLE`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
   */
  s3?: Omit<S3StoreOptions, 'bucket' | 'prefix'>;
  logger?: Logger;
}

/**
 * Opens the store that a storage URL names: a `FileObjectStore` for `file://` URLs and folder
 * paths, an `S3ObjectStore` for `s3://bucket/prefix`. The AWS SDK is loaded only for S3 URLs.
 */
export async function openObjectStore(url: string, options: OpenObjectStoreOptions = {}): Promise<ObjectStore> {
  const location = parseStorageUrl(url, options.cwd);
  if (location.kind === 'file') {
    return FileObjectStore.open(location.root);
  }

  const { S3ObjectStore } = await import('./s3-store.js');
  const connection = mergeConnection(readS3ConnectionFromEnv(options.env ?? process.env), options.s3?.connection);
  return new S3ObjectStore({
    ...options.s3,
    bucket: location.bucket,
    prefix: location.prefix,
    connection,
    logger: options.s3?.logger ?? options.logger,
  });
}
