import { describe, expect, it } from 'vitest';

import { errorCodeOfReason } from './fleet-metrics.js';

describe('errorCodeOfReason', () => {
  it.each([
    ['KEY_STORE_MISMATCH: Dataset cifar10 test has fingerprint …', 'KEY_STORE_MISMATCH'],
    ['RUN_CANCELLED: Extract job of build b stopped because its run was cancelled.', 'RUN_CANCELLED'],
    ['child cachefleet:extract:extract-b-0-100 failed', 'CHILD_FAILED'],
    ['NOT_A_CODE: something', 'UNCLASSIFIED'],
    ['connect ECONNREFUSED 127.0.0.1:9000', 'UNCLASSIFIED'],
    [undefined, 'UNCLASSIFIED'],
  ])('maps %j to %s', (reason, code) => {
    expect(errorCodeOfReason(reason)).toBe(code);
  });
});
