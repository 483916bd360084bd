import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Folder with the real CIFAR-10 data, the pretrained models and the reference values.
 * Set CACHEFLEET_SHARED to point elsewhere; the default is `../shared` beside the checkout.
 */
export const sharedDir = path.resolve(repositoryRoot, process.env.CACHEFLEET_SHARED ?? '../shared');

export const cifar10Dir = path.join(sharedDir, 'data/cifar-10-batches-bin');
export const resnet32Path = path.join(sharedDir, 'models/keras-cifar10/cifar10_ResNet32v1_model.150.h5');
export const resnet20Path = path.join(sharedDir, 'models/keras-cifar10/cifar10_ResNet20v1_model.178.h5');
export const referenceDir = path.join(sharedDir, 'reference');

export function requireSharedData(): void {
  if (!existsSync(cifar10Dir)) {
    throw new Error(`Real data not found at ${cifar10Dir}. Set CACHEFLEET_SHARED to the folder that contains data/, models/ and reference/.`);
  }
}
