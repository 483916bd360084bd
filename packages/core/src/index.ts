export * from './errors.js';
export * from './log.js';
export * from './datasets/index.js';
export * from './preprocessing/index.js';
export * from './models/index.js';
export * from './cache/index.js';
export * from './store/index.js';
export * from './local/index.js';
