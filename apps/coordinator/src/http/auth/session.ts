import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Name of the HttpOnly cookie that carries a browser session. */
export const SESSION_COOKIE = 'cachefleet_session';

/**
 * Compares a presented token with the configured one in constant time. Both sides are hashed
 * first, so neither their lengths nor their common prefix leak through timing.
 */
export function tokensEqual(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/**
 * Issues and checks stateless session cookies: `<expiry seconds>.<nonce>.<HMAC-SHA256>`. The HMAC
 * key derives from the API token, so changing the token ends every session.
 *
 * NOTE: logging out deletes the cookie in the browser only. A copied cookie value stays valid
 * until it expires (`ttlSeconds`), because the server keeps no session list.
 */
export class SessionSigner {
  private readonly key: Buffer;

  constructor(
    token: string,
    /** Lifetime of a session in seconds. */
    readonly ttlSeconds: number,
  ) {
    this.key = createHmac('sha256', token).update('cachefleet session cookie v1').digest();
  }

  /** Creates a cookie value that expires `ttlSeconds` from `now` (milliseconds since the epoch). */
  issue(now = Date.now()): string {
    const payload = `${Math.floor(now / 1000) + this.ttlSeconds}.${randomBytes(12).toString('base64url')}`;
    return `${payload}.${this.sign(payload)}`;
  }

  /** Returns whether a cookie value was issued with this key and has not expired. */
  verify(value: string | undefined, now = Date.now()): boolean {
    if (value === undefined) return false;
    const parts = value.split('.');
    if (parts.length !== 3) return false;

    const [expiry, nonce, signature] = parts;
    const expected = Buffer.from(this.sign(`${expiry}.${nonce}`));
    const presented = Buffer.from(signature);
    if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return false;
    return /^\d+$/.test(expiry) && Number(expiry) * 1000 > now;
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }
}
