import { InvalidArgumentError } from 'commander';

import { linspace } from '@cachefleet/core';

/** Parses a finite number option; commander prints the message and exits with code 1 on failure. */
export function parseNumber(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed)) {
    throw new InvalidArgumentError(`"${value}" is not a finite number.`);
  }
  return parsed;
}

export function parsePositiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) {
    throw new InvalidArgumentError(`"${value}" is not a positive whole number.`);
  }
  return parsed;
}

/** Parses a count option that may be 0, such as a number of worker processes to start. */
export function parseCount(value: string): number {
  return value === '0' ? 0 : parsePositiveInteger(value);
}

/**
 * Parses a grid given as `START:STOP:COUNT` (evenly spaced, both ends included, like
 * numpy.linspace) or as a comma-separated list of values.
 */
export function parseGrid(value: string): number[] {
  const range = value.split(':');
  if (range.length === 3) {
    const [start, stop, count] = [parseNumber(range[0]), parseNumber(range[1]), parsePositiveInteger(range[2])];
    return linspace(start, stop, count);
  }
  const values = value.split(',').map((item) => parseNumber(item));
  if (values.length === 0) throw new InvalidArgumentError('The grid is empty: give START:STOP:COUNT or a comma-separated list.');
  return values;
}

/** Parses `82,92,103` or `activation_23,activation_26`: whole numbers become layer indices. */
export function parseKeyLayers(value: string): Array<string | number> {
  const items = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  if (items.length === 0) throw new InvalidArgumentError('No key layers given: list layer names or 0-based indices, separated by commas.');
  return items.map((item) => (/^\d+$/.test(item) ? Number(item) : item));
}

/** Parses a half-open record range `START:END`. */
export function parseRange(value: string): { start: number; end: number } {
  const match = /^(\d+):(\d+)$/.exec(value);
  if (match === null) throw new InvalidArgumentError(`"${value}" is not a record range: give START:END (half-open), such as 0:45000.`);
  return { start: Number(match[1]), end: Number(match[2]) };
}

/** Parses a comma-separated list, dropping empty items. */
export function parseList(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter((item) => item !== '');
}

export function parseStatisticsSplits(value: string): Array<'train' | 'test'> {
  const splits = parseList(value);
  for (const split of splits) {
    if (split !== 'train' && split !== 'test') throw new InvalidArgumentError(`--stats-from "${value}" is invalid: list train and/or test, separated by commas.`);
  }
  return splits as Array<'train' | 'test'>;
}
