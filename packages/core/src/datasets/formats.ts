/**
 * Layouts of the CIFAR-10 and CIFAR-100 "binary version" files, as published at
 * https://www.cs.toronto.edu/~kriz/cifar.html. Each record is its label bytes followed by
 * 3,072 pixel bytes: the red, green and blue planes, each 32×32 in row-major order.
 */

export type DatasetName = 'cifar10' | 'cifar100';
export type SplitName = 'train' | 'test';

/** Label granularity. CIFAR-10 has only `fine` labels; CIFAR-100 has 100 fine and 20 coarse classes. */
export type LabelMode = 'fine' | 'coarse';

export const DATASET_NAMES: readonly DatasetName[] = ['cifar10', 'cifar100'];
export const SPLIT_NAMES: readonly SplitName[] = ['train', 'test'];
export const LABEL_MODES: readonly LabelMode[] = ['fine', 'coarse'];

export const IMAGE_HEIGHT = 32;
export const IMAGE_WIDTH = 32;
export const IMAGE_CHANNELS = 3;
/** Pixel bytes per image: 32 × 32 × 3. */
export const IMAGE_BYTES = IMAGE_HEIGHT * IMAGE_WIDTH * IMAGE_CHANNELS;
/** Bytes of one colour plane (32 × 32) inside a record. */
export const PLANE_BYTES = IMAGE_HEIGHT * IMAGE_WIDTH;

/** One label byte inside each record. */
export interface LabelField {
  mode: LabelMode;
  /** Byte offset of the label inside the record. */
  offset: number;
  numClasses: number;
  /** File in the dataset folder with one class name per line, in label order. */
  namesFile: string;
}

export interface DatasetFormat {
  name: DatasetName;
  /** Name used in messages, as the dataset's authors spell it. */
  displayName: string;
  /** Top folder inside the official archive, e.g. `cifar-10-batches-bin`. */
  folderName: string;
  splitFiles: Record<SplitName, readonly string[]>;
  labelFields: readonly LabelField[];
  /** Label bytes before the pixels of each record. */
  labelBytes: number;
  /** Label bytes plus pixel bytes. */
  recordBytes: number;
}

const CIFAR10_FORMAT: DatasetFormat = {
  name: 'cifar10',
  displayName: 'CIFAR-10',
  folderName: 'cifar-10-batches-bin',
  splitFiles: {
    train: ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'],
    test: ['test_batch.bin'],
  },
  labelFields: [{ mode: 'fine', offset: 0, numClasses: 10, namesFile: 'batches.meta.txt' }],
  labelBytes: 1,
  recordBytes: 1 + IMAGE_BYTES,
};

const CIFAR100_FORMAT: DatasetFormat = {
  name: 'cifar100',
  displayName: 'CIFAR-100',
  folderName: 'cifar-100-binary',
  splitFiles: {
    train: ['train.bin'],
    test: ['test.bin'],
  },
  // The coarse (superclass) label comes first, then the fine label.
  labelFields: [
    { mode: 'coarse', offset: 0, numClasses: 20, namesFile: 'coarse_label_names.txt' },
    { mode: 'fine', offset: 1, numClasses: 100, namesFile: 'fine_label_names.txt' },
  ],
  labelBytes: 2,
  recordBytes: 2 + IMAGE_BYTES,
};

const FORMATS: Record<DatasetName, DatasetFormat> = { cifar10: CIFAR10_FORMAT, cifar100: CIFAR100_FORMAT };

export function getDatasetFormat(name: DatasetName): DatasetFormat {
  return FORMATS[name];
}

export function isDatasetName(value: unknown): value is DatasetName {
  return typeof value === 'string' && (DATASET_NAMES as readonly string[]).includes(value);
}

export function isSplitName(value: unknown): value is SplitName {
  return typeof value === 'string' && (SPLIT_NAMES as readonly string[]).includes(value);
}

export function isLabelMode(value: unknown): value is LabelMode {
  return typeof value === 'string' && (LABEL_MODES as readonly string[]).includes(value);
}

/** Returns the label field of `mode`, or undefined when the dataset has no such labels (CIFAR-10 coarse). */
export function findLabelField(format: DatasetFormat, mode: LabelMode): LabelField | undefined {
  return format.labelFields.find((field) => field.mode === mode);
}

/** Command that downloads and unpacks the dataset into `parentDir`, for the fix part of error messages. */
export function fetchCommand(name: DatasetName, parentDir: string): string {
  return `cachefleet datasets fetch ${name} ${parentDir}`;
}
