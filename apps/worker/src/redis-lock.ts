import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import type { Redis } from 'ioredis';

import { CachefleetError, type NamedLock } from '@cachefleet/core';

// Deletes the lock only while it still holds this holder's token, so an expired lock that
// another process has since taken is never released by the old holder.
const RELEASE_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export interface RedisLockOptions {
  /** Lock lifetime in milliseconds; the work must finish within it. */
  ttlMs: number;
  /** How long to wait for a lock another process holds, in milliseconds. */
  waitMs: number;
  /** Delay between attempts to take a held lock, in milliseconds. */
  pollMs?: number;
}

/**
 * A lock per name in Redis (`SET key token NX PX ttl`), below the fleet's key prefix. It guards
 * check-then-write sequences on object storage, such as writing a build's manifest only once,
 * where the storage cannot do a conditional write (s3rver).
 */
export class RedisNamedLock implements NamedLock {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly options: RedisLockOptions,
  ) {}

  async withLock<T>(name: string, work: () => Promise<T>): Promise<T> {
    const key = `${this.keyPrefix}:cachefleet-lock:${name}`;
    const token = randomUUID();
    const deadline = Date.now() + this.options.waitMs;

    while ((await this.redis.set(key, token, 'PX', this.options.ttlMs, 'NX')) !== 'OK') {
      if (Date.now() >= deadline) {
        throw new CachefleetError('STORAGE_UNAVAILABLE', `Lock ${key} stayed held by another process for ${this.options.waitMs} ms. The job is retried; if this repeats, check for a stuck worker.`, { key });
      }
      await sleep(this.options.pollMs ?? 200);
    }

    try {
      return await work();
    } finally {
      await this.redis.eval(RELEASE_SCRIPT, 1, key, token);
    }
  }
}
