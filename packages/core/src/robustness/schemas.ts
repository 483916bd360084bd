import { z } from 'zod';

import { MODEL_NAMES } from './cache-models.js';

/** The attack families, by the names reports and flags use. */
export const ATTACK_NAMES = ['fgsm', 'iterative-fgsm', 'single-pixel', 'blur'] as const;
export type AttackName = (typeof ATTACK_NAMES)[number];

/** Gradient attacks, the only ones run white-box and swept over ε. */
export const GRADIENT_ATTACKS = ['fgsm', 'iterative-fgsm'] as const satisfies readonly AttackName[];
export type GradientAttackName = (typeof GRADIENT_ATTACKS)[number];

export const SETTINGS = ['transfer', 'white-box'] as const;
export type Setting = (typeof SETTINGS)[number];

const modelNameSchema = z.enum(MODEL_NAMES);

/**
 * θ and λ of the cache models. The defaults are the values Orhan (2018) reports for ResNet32 on
 * CIFAR-10 (θ = 85.5556, λ = 0.5111; cache-only θ = 72.2222).
 */
export const cacheParametersSchema = z.object({
  theta: z.number().finite().positive().default(85.5556),
  lambda: z.number().min(0).max(1).default(0.5111),
  thetaCacheOnly: z.number().finite().positive().default(72.2222),
});
export type CacheParameters = z.output<typeof cacheParametersSchema>;

/**
 * Settings of a robustness evaluation. Image counts are prefixes of one random subset of the test
 * split: the first `singlePixelImages` of the subset get the single-pixel attack, and so on.
 */
export const robustnessSettingsSchema = z
  .object({
    /** Seed of the test subset and of the single-pixel attack's pixel order. */
    seed: z.number().int().min(0).max(0xffffffff).default(2018),
    /** Subset size: every image gets the transfer FGSM, iterative FGSM and blur attacks. */
    images: z.number().int().positive().default(1000),
    singlePixelImages: z.number().int().nonnegative().default(200),
    /** Images attacked white-box, through the cache model and through the cache-only model. */
    whiteBoxImages: z.number().int().nonnegative().default(200),
    /** Images whose transfer accuracy is measured at every ε of the grid, for the accuracy-against-ε plot. */
    sweepImages: z.number().int().nonnegative().default(200),
    /** FGSM ε grid: `count` values up to `maxEpsilon`, a fraction of each position's input range. */
    fgsm: z.object({ maxEpsilon: z.number().positive().max(1).default(0.5), count: z.number().int().positive().default(50) }).prefault({}),
    iterativeFgsm: z
      .object({ maxEpsilon: z.number().positive().max(1).default(1), count: z.number().int().positive().default(50), steps: z.number().int().positive().default(10) })
      .prefault({}),
    singlePixel: z.object({ maxPixels: z.number().int().positive().default(1000) }).prefault({}),
    /** Blur strengths: σ = strength × image side (32 pixels for CIFAR), `count` values up to `maxStrength`. */
    blur: z.object({ maxStrength: z.number().positive().max(1).default(0.25), count: z.number().int().positive().default(50) }).prefault({}),
    /** Subset positions per slice: one fleet job each, and the unit of a local run's progress. */
    sliceSize: z.number().int().positive().default(100),
  })
  .refine((settings) => Math.max(settings.singlePixelImages, settings.whiteBoxImages, settings.sweepImages) <= settings.images, {
    message: 'singlePixelImages, whiteBoxImages and sweepImages may not exceed images, because they are prefixes of the same subset',
  });
export type RobustnessSettingsInput = z.input<typeof robustnessSettingsSchema>;
export type RobustnessSettings = z.output<typeof robustnessSettingsSchema>;

const predictionsSchema = z.object({ baseline: z.number().int(), cache: z.number().int(), cacheOnly: z.number().int() });
export type ModelPredictions = z.infer<typeof predictionsSchema>;

/** One attack on one image: where it succeeded, how large it was and how each model classifies the result. */
export const attackRecordSchema = z.object({
  setting: z.enum(SETTINGS),
  /** The model whose predictions (and gradients, for white-box) the attack used. */
  attacked: modelNameSchema,
  attack: z.enum(ATTACK_NAMES),
  found: z.boolean(),
  strength: z.number().nullable(),
  gridIndex: z.number().int().nullable(),
  perturbation: z.number().nullable(),
  /** Predictions of the three models on the adversarial image; null when none was found. */
  predictions: predictionsSchema.nullable(),
});
export type AttackRecord = z.infer<typeof attackRecordSchema>;

/**
 * Transfer sweep of one gradient attack on one image. For each model it gives the index of the
 * first ε of the grid whose baseline-made image the model misclassifies. The index is -1 when the
 * model misclassifies the clean image, and null when it classifies every image of the grid correctly.
 */
export const sweepRecordSchema = z.object({
  attack: z.enum(GRADIENT_ATTACKS),
  firstError: z.object({ baseline: z.number().int().nullable(), cache: z.number().int().nullable(), cacheOnly: z.number().int().nullable() }),
});
export type SweepRecord = z.infer<typeof sweepRecordSchema>;

export const imageRecordSchema = z.object({
  /** Position in the subset. */
  position: z.number().int().nonnegative(),
  /** Record index in the test split. */
  record: z.number().int().nonnegative(),
  label: z.number().int().nonnegative(),
  clean: predictionsSchema,
  attacks: z.array(attackRecordSchema),
  sweeps: z.array(sweepRecordSchema),
});
export type ImageRecord = z.infer<typeof imageRecordSchema>;

/** Wall time of each part of a slice, in milliseconds. */
export const partTimingsSchema = z.record(z.string(), z.number().nonnegative());

/** Records of one slice of the subset: the result object of a fleet attack job, and one step of a local run. */
export const sliceResultSchema = z.object({
  positions: z.object({ start: z.number().int().nonnegative(), end: z.number().int().positive() }),
  images: z.array(imageRecordSchema),
  timingsMs: partTimingsSchema,
  /** Engines, for the report. */
  engines: z.object({ gradient: z.string(), readout: z.string() }),
});
export type SliceResult = z.infer<typeof sliceResultSchema>;

export { modelNameSchema };
