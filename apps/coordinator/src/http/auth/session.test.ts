import { describe, expect, it } from 'vitest';

import { SessionSigner, tokensEqual } from './session.js';

const TOKEN = 'test-token-0123456789abcdef';
const NOW = Date.UTC(2026, 11, 4, 12, 0, 0);

describe('SessionSigner', () => {
  it('accepts a cookie it issued', () => {
    const signer = new SessionSigner(TOKEN, 3600);

    expect(signer.verify(signer.issue(NOW), NOW + 1000)).toBe(true);
  });

  it('rejects an expired cookie', () => {
    const signer = new SessionSigner(TOKEN, 3600);

    expect(signer.verify(signer.issue(NOW), NOW + 3601 * 1000)).toBe(false);
  });

  it('rejects a cookie of another token', () => {
    const cookie = new SessionSigner('another-token-0123456789', 3600).issue(NOW);

    expect(new SessionSigner(TOKEN, 3600).verify(cookie, NOW)).toBe(false);
  });

  it('rejects a cookie with a later expiry', () => {
    const signer = new SessionSigner(TOKEN, 3600);
    const [expiry, nonce, signature] = signer.issue(NOW).split('.');
    const extended = `${Number(expiry) + 86_400}.${nonce}.${signature}`;

    expect(signer.verify(extended, NOW)).toBe(false);
  });

  it('rejects malformed cookies', () => {
    const signer = new SessionSigner(TOKEN, 3600);

    for (const value of [undefined, '', 'abc', 'a.b', 'a.b.c.d', `x.${signer.issue(NOW).split('.').slice(1).join('.')}`]) {
      expect(signer.verify(value, NOW)).toBe(false);
    }
  });
});

describe('tokensEqual', () => {
  it('compares whole tokens', () => {
    expect(tokensEqual(TOKEN, TOKEN)).toBe(true);
    expect(tokensEqual(TOKEN.slice(0, -1), TOKEN)).toBe(false);
    expect(tokensEqual(`${TOKEN}x`, TOKEN)).toBe(false);
    expect(tokensEqual('', TOKEN)).toBe(false);
  });
});
