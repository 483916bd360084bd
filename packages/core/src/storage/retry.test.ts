import { describe, expect, it } from 'vitest';

import { backoffDelayMs, isTransientError, retryTransient, type RetryPolicy } from './retry.js';

const FAST: RetryPolicy = { budgetMs: 500, initialDelayMs: 5, maxDelayMs: 20 };

function networkError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:1`), { code });
}

function httpError(name: string, status: number): Error {
  return Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
}

describe('isTransientError', () => {
  it.each([
    ['ECONNREFUSED', networkError('ECONNREFUSED')],
    ['ECONNRESET', networkError('ECONNRESET')],
    ['TimeoutError', Object.assign(new Error('socket timed out'), { name: 'TimeoutError' })],
    ['HTTP 500', httpError('InternalError', 500)],
    ['HTTP 503 SlowDown', httpError('SlowDown', 503)],
    ['HTTP 429', httpError('TooManyRequests', 429)],
    ['socket hang up', new Error('socket hang up')],
    ['wrapped reset', new Error('upload failed', { cause: networkError('ECONNRESET') })],
  ])('retries %s', (_label, error) => {
    expect(isTransientError(error)).toBe(true);
  });

  it.each([
    ['HTTP 403', httpError('AccessDenied', 403)],
    ['HTTP 404', httpError('NoSuchKey', 404)],
    ['HTTP 405', httpError('MethodNotAllowed', 405)],
    ['HTTP 412', httpError('PreconditionFailed', 412)],
    ['TypeError', new TypeError('x is not a function')],
    ['string', 'boom'],
  ])('does not retry %s', (_label, error) => {
    expect(isTransientError(error)).toBe(false);
  });
});

describe('retryTransient', () => {
  it('retries until success', async () => {
    let calls = 0;

    const result = await retryTransient(async () => {
      calls += 1;
      if (calls < 3) {
        throw networkError('ECONNREFUSED');
      }
      return 'done';
    }, FAST);

    expect(result).toBe('done');
    expect(calls).toBe(3);
  });

  it('raises permanent errors at once', async () => {
    let calls = 0;
    const operation = async () => {
      calls += 1;
      throw httpError('AccessDenied', 403);
    };

    await expect(retryTransient(operation, FAST)).rejects.toThrow('AccessDenied');
    expect(calls).toBe(1);
  });

  it('stops when the budget is spent', async () => {
    const startedAt = Date.now();
    const exhaustions: number[] = [];

    const attempt = retryTransient(
      async () => {
        throw networkError('ECONNREFUSED');
      },
      FAST,
      {
        onExhausted: ({ attempts }) => {
          exhaustions.push(attempts);
          return new Error(`gave up after ${attempts} attempts`);
        },
      },
    );

    await expect(attempt).rejects.toThrow(/gave up after \d+ attempts/);
    const elapsedMs = Date.now() - startedAt;
    expect(elapsedMs).toBeLessThanOrEqual(FAST.budgetMs + 100);
    expect(exhaustions[0]).toBeGreaterThan(5);
  });

  it('reports each retry', async () => {
    const attempts: number[] = [];
    let calls = 0;

    await retryTransient(
      async () => {
        calls += 1;
        if (calls < 3) {
          throw networkError('ECONNRESET');
        }
      },
      FAST,
      { onRetry: ({ attempt }) => attempts.push(attempt) },
    );

    expect(attempts).toEqual([1, 2]);
  });
});

describe('backoffDelayMs', () => {
  const policy: RetryPolicy = { budgetMs: 60_000, initialDelayMs: 200, maxDelayMs: 4_000 };

  it('stays within the exponential bound', () => {
    for (let attempt = 1; attempt <= 12; attempt += 1) {
      const bound = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
      for (let sample = 0; sample < 50; sample += 1) {
        const delay = backoffDelayMs(attempt, policy);
        expect(delay).toBeGreaterThanOrEqual(bound / 2 - 1);
        expect(delay).toBeLessThanOrEqual(bound + 1);
      }
    }
  });

  it('caps at maxDelayMs', () => {
    expect(backoffDelayMs(1_000, policy)).toBeLessThanOrEqual(policy.maxDelayMs);
  });
});
