import { createHash } from 'node:crypto';

import { z } from 'zod';

import { CachefleetError } from '../errors.js';
import type { PixelStatistics } from './statistics.js';

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** One split whose records contributed to the statistics. */
export const StatisticsSplitSchema = z.object({
  split: z.enum(['train', 'test']),
  /** `DatasetSplit.fingerprint`: SHA-256 over the split's file digests. */
  fingerprint: z.string().regex(SHA256_HEX, 'expected 64 lowercase hex digits'),
  size: z.number().int().positive(),
});

/** The records the mean and standard deviation were computed from. */
export const StatisticsSourceSchema = z.object({
  dataset: z.enum(['cifar10', 'cifar100']),
  splits: z.array(StatisticsSplitSchema).min(1),
  recordCount: z.number().int().positive(),
});

export type StatisticsSplit = z.infer<typeof StatisticsSplitSchema>;
export type StatisticsSource = z.infer<typeof StatisticsSourceSchema>;

const float32Value = z
  .number()
  .finite()
  .refine((value) => Math.fround(value) === value, 'expected a value representable as float32');

/**
 * Preprocessing of uint8 NHWC images into the model input, stored with every cache so that keys
 * built at different times are comparable. Each value becomes `(x / scale − mean) / std` in
 * float32 arithmetic, with `mean` and `std` per pixel and channel (H × W × C, HWC order).
 */
export const PreprocessingSpecSchema = z
  .object({
    version: z.literal(1),
    layout: z.literal('NHWC'),
    arithmetic: z.literal('float32'),
    height: z.number().int().positive(),
    width: z.number().int().positive(),
    channels: z.number().int().positive(),
    /** Divisor applied first: 255 maps uint8 pixels to [0, 1]. */
    scale: z.literal(255),
    standardization: z.object({
      kind: z.literal('per-pixel'),
      /** Delta degrees of freedom of the standard deviation: 0, the population form. */
      ddof: z.literal(0),
      source: StatisticsSourceSchema,
      mean: z.array(float32Value),
      std: z.array(float32Value.refine((value) => value > 0, 'expected a standard deviation greater than 0')),
    }),
  })
  .superRefine((spec, context) => {
    const expected = spec.height * spec.width * spec.channels;
    for (const field of ['mean', 'std'] as const) {
      const actual = spec.standardization[field].length;
      if (actual !== expected) {
        context.addIssue({
          code: 'custom',
          path: ['standardization', field],
          message: `expected ${expected} values (height × width × channels), got ${actual}`,
        });
      }
    }
  });

export type PreprocessingSpec = z.infer<typeof PreprocessingSpecSchema>;

/** Builds the preprocessing spec that standardises with `statistics`. */
export function createPreprocessingSpec(statistics: PixelStatistics): PreprocessingSpec {
  return parsePreprocessingSpec({
    version: 1,
    layout: 'NHWC',
    arithmetic: 'float32',
    height: statistics.height,
    width: statistics.width,
    channels: statistics.channels,
    scale: 255,
    standardization: {
      kind: 'per-pixel',
      ddof: 0,
      source: statistics.source,
      mean: Array.from(statistics.mean),
      std: Array.from(statistics.std),
    },
  });
}

/** Validates `value` (e.g. read from a cache manifest) and returns it as a spec; throws INVALID_ARGUMENT listing zod's issues. */
export function parsePreprocessingSpec(value: unknown): PreprocessingSpec {
  const result = PreprocessingSpecSchema.safeParse(value);
  if (!result.success) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid preprocessing spec:\n${z.prettifyError(result.error)}`, {
      issues: result.error.issues,
    });
  }
  return result.data;
}

/**
 * Computes the SHA-256 (lowercase hex) of the spec's canonical JSON: object keys sorted, arrays
 * in order, numbers as JavaScript prints them (the shortest form that parses back to the same
 * value). Equal specs give equal hashes whatever the key order of the object they came from.
 */
export function preprocessingHash(spec: PreprocessingSpec): string {
  const parsed = parsePreprocessingSpec(spec);
  return createHash('sha256').update(canonicalJson(parsed)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) {
    return `[${value.map(canonicalJson).join(',')}]`;
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => compareCodeUnits(a, b));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Orders strings by UTF-16 code units, independent of the locale (unlike localeCompare). */
function compareCodeUnits(a: string, b: string): number {
  if (a < b) {
    return -1;
  }
  if (a > b) {
    return 1;
  }
  return 0;
}
