export * from './spec.js';
export * from './statistics.js';
export * from './statistics-cache.js';
export * from './standardize.js';
export * from './mirror.js';
export * from './default-spec.js';
