import { z } from 'zod';

import { ROBUSTNESS_REPORT_KIND, ROBUSTNESS_REPORT_VERSION, type RobustnessReport } from './aggregate.js';
import { MODEL_NAMES } from './cache-models.js';
import { ATTACK_NAMES, cacheParametersSchema, GRADIENT_ATTACKS, imageRecordSchema, modelNameSchema, robustnessSettingsSchema, SETTINGS } from './schemas.js';

const nullableNumber = z.number().nullable();
const perModel = <T extends z.ZodType>(value: T) => z.object({ baseline: value, cache: value, cacheOnly: value });

const quantilesSchema = z.object({
  count: z.number().int().nonnegative(),
  min: nullableNumber,
  p05: nullableNumber,
  p25: nullableNumber,
  median: nullableNumber,
  p75: nullableNumber,
  p95: nullableNumber,
  max: nullableNumber,
  mean: nullableNumber,
});

/** Schema of the robustness report, for reading one back (a fleet report, a saved file). */
export const robustnessReportSchema = z.object({
  kind: z.literal(ROBUSTNESS_REPORT_KIND),
  schemaVersion: z.literal(ROBUSTNESS_REPORT_VERSION),
  createdAt: z.string(),
  context: z.object({
    model: z.object({ source: z.string(), fingerprint: z.string(), fileSha256: z.string(), keyLayers: z.array(z.string()) }),
    cache: z.object({ keys: z.number().int(), stores: z.array(z.string()) }),
    preprocessing: z.object({ hash: z.string(), description: z.string() }),
    dataset: z.object({ name: z.string(), dir: z.string(), testFingerprint: z.string() }),
    runner: z.string(),
  }),
  parameters: cacheParametersSchema,
  settings: robustnessSettingsSchema,
  subset: z.object({ seed: z.number().int(), size: z.number().int().positive(), algorithm: z.string(), sha256: z.string(), records: z.array(z.number().int().nonnegative()) }),
  engines: z.object({ gradient: z.string(), readout: z.string() }),
  clean: z.object({ images: z.number().int().positive(), accuracy: perModel(z.number()) }),
  attacks: z.array(
    z.object({
      setting: z.enum(SETTINGS),
      attacked: modelNameSchema,
      attack: z.enum(ATTACK_NAMES),
      note: z.string().optional(),
      images: z.number().int().positive(),
      found: z.number().int().nonnegative(),
      successRate: z.number(),
      accuracy: perModel(nullableNumber),
      robustAccuracy: z.number(),
      perturbation: quantilesSchema,
      strength: quantilesSchema,
      strengthUnit: z.string(),
    }),
  ),
  curves: z.array(
    z.object({
      setting: z.enum(SETTINGS),
      attack: z.enum(GRADIENT_ATTACKS),
      model: z.enum(MODEL_NAMES),
      images: z.number().int().positive(),
      epsilons: z.array(z.number()),
      accuracy: z.array(z.number()),
    }),
  ),
  comparisons: z.array(
    z.object({
      setting: z.enum(SETTINGS),
      attack: z.enum(ATTACK_NAMES),
      model: z.enum(['cache', 'cacheOnly']),
      metric: z.string(),
      baseline: nullableNumber,
      value: nullableNumber,
      moreRobust: z.boolean().nullable(),
    }),
  ),
  timingsMs: z.record(z.string(), z.number()),
  images: z.array(imageRecordSchema).optional(),
}) satisfies z.ZodType<RobustnessReport>;
