import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { invalidRequestError, listRequestIssues } from './request-issues.js';

const schema = z.strictObject({
  theta: z.number().positive('θ must be greater than 0'),
  grid: z.array(z.number({ error: 'θ must be a finite number' })),
  range: z.object({ start: z.number(), end: z.number() }).optional(),
});

function issuesOf(input: unknown) {
  const parsed = schema.safeParse(input);
  if (parsed.success) throw new Error('expected the input to fail the schema');
  return { error: parsed.error, issues: listRequestIssues(parsed.error, input) };
}

describe('listRequestIssues', () => {
  it('names the path and value', () => {
    const { issues } = issuesOf({ theta: -2, grid: [1] });

    expect(issues).toEqual([{ path: 'theta', value: -2, message: 'θ must be greater than 0' }]);
  });

  it('indexes array elements', () => {
    const { issues } = issuesOf({ theta: 1, grid: [1, Number.NaN] });

    expect(issues[0].path).toBe('grid[1]');
    expect(Number.isNaN(issues[0].value)).toBe(true);
  });

  it('lists unknown fields without a value', () => {
    const { issues } = issuesOf({ theta: 1, grid: [], thetaa: 5 });

    expect(issues).toEqual([{ path: '', message: 'Unrecognized key: "thetaa". Remove it, or check its spelling' }]);
  });

  it('marks missing fields', () => {
    const { issues } = issuesOf({ grid: [] });

    expect(issues[0]).toMatchObject({ path: 'theta', value: undefined });
  });
});

describe('invalidRequestError', () => {
  it('quotes values in the message', () => {
    const { error } = issuesOf({ theta: 0, grid: [Number.POSITIVE_INFINITY] });
    const raised = invalidRequestError('Evaluation request', error, { theta: 0, grid: [Number.POSITIVE_INFINITY] });

    expect(raised.code).toBe('INVALID_ARGUMENT');
    expect(raised.message).toBe('Evaluation request is invalid: theta = 0: θ must be greater than 0; grid[0] = Infinity: θ must be a finite number. Correct these fields and submit it again.');
    expect(raised.details.issues).toHaveLength(2);
  });

  it('writes missing values as missing', () => {
    const { error } = issuesOf({ grid: [] });

    expect(invalidRequestError('Request', error, { grid: [] }).message).toContain('theta = (missing):');
  });

  it('shortens long values', () => {
    const long = 'x'.repeat(500);
    const { error } = issuesOf({ theta: long, grid: [] });

    expect(invalidRequestError('Request', error, { theta: long, grid: [] }).message).toContain(`theta = "${'x'.repeat(79)}…`);
  });
});
