import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { limitRepeatedErrors } from './log.js';

describe('limitRepeatedErrors', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('logs the first error of each key', () => {
    const limit = limitRepeatedErrors(10_000, 3_000);
    const logged: string[] = [];

    limit('a', () => logged.push('a'));
    limit('b', () => logged.push('b'));

    expect(logged).toEqual(['a', 'b']);
  });

  it('counts repeats within the interval', () => {
    const limit = limitRepeatedErrors(10_000, 3_000);
    const suppressed: number[] = [];

    // One error a second for 12 s: logged at 0 s and again once 10 s have passed.
    for (let second = 0; second <= 12; second += 1) {
      limit('a', (repeats) => suppressed.push(repeats));
      vi.advanceTimersByTime(1_000);
    }

    expect(suppressed).toEqual([0, 9]);
  });

  it('logs a new incident after a quiet gap', () => {
    const limit = limitRepeatedErrors(10_000, 3_000);
    const suppressed: number[] = [];

    limit('a', (repeats) => suppressed.push(repeats));
    vi.advanceTimersByTime(1_000);
    limit('a', (repeats) => suppressed.push(repeats));
    vi.advanceTimersByTime(4_000);
    limit('a', (repeats) => suppressed.push(repeats));

    expect(suppressed).toEqual([0, 1]);
  });
});
