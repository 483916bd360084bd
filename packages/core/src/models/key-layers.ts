import type * as tfl from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';

/** A layer whose activations form part of each cache key. */
export interface KeyLayer {
  /** 0-based index into `model.layers`, which keeps the Keras layer order. */
  index: number;
  name: string;
  /** Output shape without the batch dimension, such as [8, 8, 64]. */
  shape: number[];
  /** Number of values per image: the product of `shape`. */
  size: number;
}

/** How many similar layer names a KEY_LAYER_NOT_FOUND message suggests. */
const SUGGESTION_COUNT = 5;

/**
 * Parses a comma-separated key-layer list such as "82,92,103" or "activation_23,activation_26".
 * Entries made only of digits become layer indices, the others stay layer names.
 */
export function parseKeyLayerList(text: string): Array<string | number> {
  const entries = text.split(',').map((entry) => entry.trim());
  if (entries.some((entry) => entry === '')) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Key-layer list "${text}" has an empty entry. Give layer indices or names separated by commas, such as "82,92,103".`,
      { value: text },
    );
  }

  return entries.map((entry) => (/^\d+$/.test(entry) ? Number(entry) : entry));
}

/**
 * Resolves key-layer specs to layers of `model`. A number, or a string made only of digits, is
 * a 0-based index into `model.layers`, and any other string is a layer name.
 * Throws KEY_LAYER_NOT_FOUND for an unknown name or index. Throws INVALID_ARGUMENT for an empty
 * list, a layer given twice, or a layer whose output shape is not fixed.
 */
export function resolveKeyLayers(model: tfl.LayersModel, specs: Array<string | number>): KeyLayer[] {
  if (specs.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'The key-layer list is empty. Name at least one layer, such as "82,92,103" for ResNet32.', {});
  }

  const keyLayers = specs.map((spec) => describeKeyLayer(model, findLayerIndex(model, spec)));

  const seen = new Map<number, number>();
  keyLayers.forEach((keyLayer, position) => {
    const earlier = seen.get(keyLayer.index);
    if (earlier !== undefined) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Key layers ${String(specs[earlier])} and ${String(specs[position])} are the same layer, ${keyLayer.name} (index ${keyLayer.index}). List each layer once.`,
        { specs, index: keyLayer.index },
      );
    }
    seen.set(keyLayer.index, position);
  });
  return keyLayers;
}

function findLayerIndex(model: tfl.LayersModel, spec: string | number): number {
  const lastIndex = model.layers.length - 1;

  if (typeof spec === 'number' || /^\d+$/.test(spec)) {
    const index = Number(spec);
    if (Number.isInteger(index) && index >= 0 && index <= lastIndex) return index;

    const tail = model.layers.slice(-3).map((layer, offset) => `${lastIndex - 2 + offset}: ${layer.name}`);
    throw new CachefleetError(
      'KEY_LAYER_NOT_FOUND',
      `Key layer index ${String(spec)} does not exist: valid indices are 0 to ${lastIndex}. The last layers are ${tail.join(', ')}.`,
      { value: spec, validRange: [0, lastIndex] },
    );
  }

  const index = model.layers.findIndex((layer) => layer.name === spec);
  if (index >= 0) return index;

  const suggestions = suggestLayerNames(model, spec);
  throw new CachefleetError(
    'KEY_LAYER_NOT_FOUND',
    `Key layer "${spec}" not found in the model. Give a layer name or an index from 0 to ${lastIndex}. Similar names: ${suggestions.join(', ')}.`,
    { value: spec, validRange: [0, lastIndex], suggestions },
  );
}

function describeKeyLayer(model: tfl.LayersModel, index: number): KeyLayer {
  const layer = model.layers[index];
  const outputShape = layer.outputShape;
  const shape = Array.isArray(outputShape[0]) ? undefined : (outputShape as Array<number | null>).slice(1);

  if (shape === undefined || shape.some((dimension) => dimension === null || dimension <= 0)) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Key layer ${layer.name} (index ${index}) has output shape ${JSON.stringify(outputShape)}, which is not one fixed shape. Choose a layer with a single output of fixed size.`,
      { index, name: layer.name, outputShape },
    );
  }

  const fixedShape = shape as number[];
  const size = fixedShape.reduce((product, dimension) => product * dimension, 1);
  return { index, name: layer.name, shape: fixedShape, size };
}

/**
 * Returns the layer names closest to `name` by edit distance, each with its index. Ties go to
 * the longer shared prefix, so "activation_230" suggests activation_23 before activation_20.
 */
function suggestLayerNames(model: tfl.LayersModel, name: string): string[] {
  return model.layers
    .map((layer, index) => ({
      label: `${layer.name} (${index})`,
      distance: editDistance(name, layer.name),
      prefix: sharedPrefixLength(name, layer.name),
      index,
    }))
    .sort((a, b) => a.distance - b.distance || b.prefix - a.prefix || a.index - b.index)
    .slice(0, SUGGESTION_COUNT)
    .map((candidate) => candidate.label);
}

/** Levenshtein distance: the fewest single-character insertions, deletions or substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

function sharedPrefixLength(a: string, b: string): number {
  let length = 0;
  while (length < a.length && length < b.length && a[length] === b[length]) length++;
  return length;
}
