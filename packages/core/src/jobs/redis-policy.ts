import { CachefleetError } from '../errors.js';

/**
 * Reads `maxmemory_policy` from the text of Redis `INFO memory` (lines of `field:value`,
 * separated by CRLF). INFO is used instead of `CONFIG GET` because managed Redis services often
 * disable CONFIG. Returns undefined when the field is absent.
 */
export function parseMaxmemoryPolicy(info: string): string | undefined {
  for (const line of info.split(/\r?\n/)) {
    const match = /^maxmemory_policy:(.*)$/.exec(line.trim());
    if (match !== null) return match[1].trim();
  }
  return undefined;
}

/**
 * Throws INVALID_ARGUMENT unless Redis evicts nothing. Under any eviction policy Redis may drop
 * BullMQ's job hashes, locks or queue lists when memory runs out, and jobs are then lost
 * silently; BullMQ itself only prints a warning.
 */
export function assertNoEviction(policy: string | undefined, redisUrl: string): void {
  if (policy === 'noeviction') return;

  const found = policy === undefined ? 'does not report maxmemory_policy in INFO memory' : `has maxmemory-policy ${policy}`;
  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `Redis at ${redisUrl} ${found}, but the fleet needs noeviction: under eviction Redis may delete queued jobs and locks when memory is full, and the jobs are lost. Start Redis with --maxmemory-policy noeviction (or set it in redis.conf).`,
    { policy, redisUrl },
  );
}

/** The one Redis command the check needs, as ioredis provides it. */
export interface RedisInfoSource {
  info(section: 'memory'): Promise<string>;
}

/** Reads the policy from a live connection and checks it; see assertNoEviction. */
export async function checkRedisEvictionPolicy(redis: RedisInfoSource, redisUrl: string): Promise<string> {
  const policy = parseMaxmemoryPolicy(await redis.info('memory'));
  assertNoEviction(policy, redisUrl);
  return policy as string;
}

/** Redis URL without its password, for logs and messages. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable Redis URL)';
  }
}
