import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { IMAGE_CHANNELS, IMAGE_WIDTH, PLANE_BYTES, getDatasetFormat, type DatasetName, type LabelMode, type SplitName } from './formats.js';

/** Options for `writeSyntheticDataset`. */
export interface SyntheticDatasetOptions {
  dataset: DatasetName;
  /** Records in each record file of the train split; default 20. CIFAR-10 has five train files. */
  trainRecordsPerFile?: number;
  /** Records in the test file; default 10. */
  testRecordsPerFile?: number;
}

/**
 * Writes a small, valid dataset in the official binary layout under `parentDir` and returns its
 * folder (`parentDir/cifar-10-batches-bin` or `parentDir/cifar-100-binary`). Labels come from
 * `syntheticLabel` and pixels from `syntheticPixel`, so tests can predict every value without
 * the real files.
 */
export async function writeSyntheticDataset(parentDir: string, options: SyntheticDatasetOptions): Promise<string> {
  const format = getDatasetFormat(options.dataset);
  const datasetDir = path.join(parentDir, format.folderName);
  await mkdir(datasetDir, { recursive: true });

  const recordsPerFile: Record<SplitName, number> = {
    train: options.trainRecordsPerFile ?? 20,
    test: options.testRecordsPerFile ?? 10,
  };
  for (const split of ['train', 'test'] as const) {
    let index = 0;
    for (const file of format.splitFiles[split]) {
      const count = recordsPerFile[split];
      const bytes = Buffer.alloc(count * format.recordBytes);
      for (let r = 0; r < count; r++) {
        writeSyntheticRecord(bytes, r * format.recordBytes, options.dataset, index);
        index += 1;
      }
      await writeFile(path.join(datasetDir, file), bytes);
    }
  }

  for (const field of format.labelFields) {
    const names = Array.from({ length: field.numClasses }, (_, label) => `${field.mode}_class_${label}`);
    // Trailing empty line, as in the original label names files.
    await writeFile(path.join(datasetDir, field.namesFile), `${names.join('\n')}\n\n`);
  }
  return datasetDir;
}

/** Label of record `index` (counted across the split's files): fine = index mod 100 (mod 10 for CIFAR-10), coarse = fine / 5 rounded down. */
export function syntheticLabel(dataset: DatasetName, mode: LabelMode, index: number): number {
  const fine = index % (dataset === 'cifar10' ? 10 : 100);
  return mode === 'fine' ? fine : Math.floor(fine / 5);
}

/** Pixel value of record `index` at (row, column, channel). */
export function syntheticPixel(index: number, row: number, column: number, channel: number): number {
  return (index * 31 + row * 7 + column * 3 + channel * 101) % 256;
}

function writeSyntheticRecord(bytes: Buffer, offset: number, dataset: DatasetName, index: number): void {
  const format = getDatasetFormat(dataset);
  for (const field of format.labelFields) {
    bytes[offset + field.offset] = syntheticLabel(dataset, field.mode, index);
  }

  const pixelsStart = offset + format.labelBytes;
  for (let channel = 0; channel < IMAGE_CHANNELS; channel++) {
    for (let position = 0; position < PLANE_BYTES; position++) {
      const row = Math.floor(position / IMAGE_WIDTH);
      const column = position % IMAGE_WIDTH;
      bytes[pixelsStart + channel * PLANE_BYTES + position] = syntheticPixel(index, row, column, channel);
    }
  }
}
