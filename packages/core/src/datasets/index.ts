export * from './formats.js';
export * from './ranges.js';
export * from './identity.js';
export * from './split.js';
export * from './fetch.js';
export * from './synthetic.js';
