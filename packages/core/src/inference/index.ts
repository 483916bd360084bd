export { exportToOnnx, ONNX_EXPORT_LAYER_CLASSES, ONNX_VALUE_NAMES } from './onnx-export.js';
export type { OnnxClassifier, OnnxExportOptions, OnnxLogitsSource } from './onnx-export.js';
export { OnnxFeatureExtractor } from './onnx-extractor.js';
export type { OnnxExtractorOptions } from './onnx-extractor.js';
