import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

import { FLEET_QUEUE_NAMES } from '@cachefleet/core';

/**
 * Obliterates the fleet's queues under a prefix, then deletes any other key under it (locks,
 * cancellation marks) with SCAN. Keys of other prefixes are never touched, so a shared Redis is
 * never flushed. Raises when Redis does not respond within a few seconds.
 */
export async function removePrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { connectTimeout: 5_000, maxRetriesPerRequest: 3 });
  // Connection errors reach the caller through the failed commands below.
  redis.on('error', () => undefined);
  try {
    for (const name of FLEET_QUEUE_NAMES) {
      const queue = new Queue(name, { connection: redis, prefix });
      // A queue that cannot be obliterated is still removed key by key below.
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
    }
    for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 1000 })) {
      if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
    }
  } finally {
    await redis.quit().catch(() => redis.disconnect());
  }
}
