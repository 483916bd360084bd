export * from './key-store-manifest.js';
export * from './local-key-store.js';
export * from './shard-format.js';
export * from './shard-io.js';
