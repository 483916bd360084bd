import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';

import { FLEET_QUEUE_NAMES } from '@cachefleet/core';

import type { FleetClient } from '../../fleet/fleet-client.js';

export const DASHBOARD_PATH = '/queues';

/**
 * Mounts bull-board at /queues with every queue of the fleet. It sits behind the server's
 * authentication like every other route, because it shows job data and full error stacks with
 * server paths. Without `actions`, it only shows jobs; with them, it can also retry, promote,
 * clean and remove jobs.
 */
export async function registerDashboard(app: FastifyInstance, client: FleetClient, actions: boolean): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);

  createBullBoard({
    queues: FLEET_QUEUE_NAMES.map((name) => new BullMQAdapter(client.queue(name), { readOnlyMode: !actions, allowRetries: actions })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'cachefleet queues' } },
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
