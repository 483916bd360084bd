import { CachefleetError } from '../errors.js';

/**
 * Keras layer classes that cachefleet runs: each one builds in tfjs-layers 4.22 and runs on
 * the wasm and cpu backends (the test `supported-layers.test.ts` builds a model from every
 * class on this list). Nested models (`Model`, `Functional`, `Sequential` as a layer) are not
 * on it, because their weights are stored under another path in Keras files.
 */
export const SUPPORTED_LAYER_CLASSES: ReadonlySet<string> = new Set([
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'BatchNormalization',
  'Activation',
  'ReLU',
  'LeakyReLU',
  'Softmax',
  'Add',
  'Multiply',
  'Concatenate',
  'AveragePooling2D',
  'MaxPooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'ZeroPadding2D',
  'Flatten',
  'Reshape',
  'Dense',
  'Dropout',
]);

/** One layer class of a model that cachefleet cannot run, with the layers that use it. */
export interface UnsupportedLayerClass {
  className: string;
  layerNames: string[];
}

interface LayerEntry {
  className: string;
  name: string;
}

/**
 * Lists the layer classes of a Keras model config (the `model_config` of a Keras .h5 file or
 * the `modelTopology` of a tfjs model.json) that are not in SUPPORTED_LAYER_CLASSES.
 * Accepts functional models (`config.layers`) and both Sequential forms (a list of layers, as
 * Keras 2.1 writes it, or `config.layers`). Throws MODEL_INVALID when no layer list is found.
 */
export function findUnsupportedLayers(modelConfig: unknown, sourcePath: string): UnsupportedLayerClass[] {
  const byClass = new Map<string, string[]>();

  for (const layer of listLayerEntries(modelConfig, sourcePath)) {
    if (SUPPORTED_LAYER_CLASSES.has(layer.className)) continue;

    const names = byClass.get(layer.className) ?? [];
    names.push(layer.name);
    byClass.set(layer.className, names);
  }

  return [...byClass].map(([className, layerNames]) => ({ className, layerNames }));
}

/** Throws MODEL_UNSUPPORTED_LAYER naming every unsupported class and the layers that use it. */
export function assertSupportedLayers(modelConfig: unknown, sourcePath: string): void {
  const unsupported = findUnsupportedLayers(modelConfig, sourcePath);
  if (unsupported.length === 0) return;

  const listed = unsupported.map((entry) => `${entry.className} (${entry.layerNames.join(', ')})`).join('; ');
  throw new CachefleetError(
    'MODEL_UNSUPPORTED_LAYER',
    `Model ${sourcePath} contains layer classes cachefleet cannot run: ${listed}. ` +
      `Supported classes: ${[...SUPPORTED_LAYER_CLASSES].join(', ')}. ` +
      'Replace those layers with supported ones, or choose a model built only from supported layers.',
    { path: sourcePath, unsupported },
  );
}

function listLayerEntries(modelConfig: unknown, sourcePath: string): LayerEntry[] {
  const layers = findLayerList(modelConfig);
  if (layers === undefined) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Model config of ${sourcePath} has no layer list (expected {class_name, config: {layers: [...]}}). ` +
        'Save the whole model with Keras model.save() or tfjs model.save(), not only its weights.',
      { path: sourcePath },
    );
  }

  return layers.map((layer, index) => {
    const className = isRecord(layer) && typeof layer.class_name === 'string' ? layer.class_name : '(no class_name)';
    return { className, name: layerName(layer) ?? `#${index}` };
  });
}

function findLayerList(modelConfig: unknown): unknown[] | undefined {
  if (!isRecord(modelConfig)) return undefined;

  const config = modelConfig.config;
  if (Array.isArray(config)) return config;
  if (isRecord(config) && Array.isArray(config.layers)) return config.layers;
  return undefined;
}

function layerName(layer: unknown): string | undefined {
  if (!isRecord(layer)) return undefined;
  if (typeof layer.name === 'string') return layer.name;
  if (isRecord(layer.config) && typeof layer.config.name === 'string') return layer.config.name;
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
