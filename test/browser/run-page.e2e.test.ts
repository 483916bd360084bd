import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DEFAULT_LAMBDAS, DEFAULT_THETAS } from '@cachefleet/core';

import type { RunResponse } from '../../apps/coordinator/src/http/runs/api-schemas.js';
import { startCoordinatorFleet, type CoordinatorFleet } from '../http/coordinator-harness.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';

const CHROMIUM = '/usr/bin/chromium';
// Headless Chromium as root, with no outside traffic: no background services, and every host
// name but 127.0.0.1 resolves to nothing.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
];
const screenshotDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-results/browser');

describe('run page and dashboard in headless Chromium', () => {
  let fleet: CoordinatorFleet;
  let userDataDir: string;
  let context: BrowserContext;
  let page: Page;
  let evaluation: RunResponse;
  let report: { cache: { theta: number; lambda: number; testError: number }; baseline: { testError: number } };

  async function api<T>(method: 'GET' | 'POST', url: string, body?: unknown): Promise<T> {
    const response = await fetch(`${fleet.coordinator.url}${url}`, {
      method,
      headers: { authorization: `Bearer ${fleet.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${url} responded with ${response.status}: ${await response.text()}`);
    return (await response.json()) as T;
  }

  beforeAll(async () => {
    requireSharedData();
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing. Install Debian's chromium package (apt-get install -y chromium); .ci/run does so in CI.`);
    await mkdir(screenshotDir, { recursive: true });

    fleet = await startCoordinatorFleet({ label: 'browser' });
    await fleet.startCoordinator();
    fleet.startWorkers(1);

    // A small evaluation whose key stores are all built by the run: a train cache of 200
    // records and validation queries of 100 records (both with mirror images), and 100 test
    // queries. θ and λ are tuned on the default 33 × 33 grid.
    const build = (split: 'train' | 'test', start: number, end: number, includeMirrors: boolean) => ({ build: { dataDir: cifar10Dir, modelPath: resnet20Path, keyLayers: [49, 57, 64], split, recordRange: { start, end }, shardRecords: end - start, includeMirrors } });
    const train = { ...build('train', 0, 200, true), role: 'train' };
    const validation = { ...build('train', 200, 300, true), role: 'validation' };
    const submitted = await api<RunResponse>('POST', '/api/v1/runs/evaluations', { validation: { queries: validation, cache: [train] }, test: { queries: { ...build('test', 0, 100, false), role: 'test' }, cache: [train, validation] } });

    const deadline = Date.now() + 300_000;
    for (evaluation = submitted; evaluation.state !== 'completed'; evaluation = await api<RunResponse>('GET', `/api/v1/runs/${submitted.runId}`)) {
      if (['failed', 'cancelled', 'lost'].includes(evaluation.state) || Date.now() > deadline) {
        throw new Error(`Evaluation ${submitted.runId} ended ${evaluation.state}: ${JSON.stringify(evaluation.errors)}\n${(await fleet.log()).slice(-3000)}`);
      }
      await sleep(500);
    }
    report = await api('GET', `/api/v1/runs/${evaluation.runId}/report`);

    userDataDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, viewport: { width: 1280, height: 900 } });
    page = context.pages()[0] ?? (await context.newPage());
  }, 420_000);

  afterAll(async () => {
    await context?.close();
    if (userDataDir !== undefined) await rm(userDataDir, { recursive: true, force: true });
    await fleet?.stop();
  });

  it.each(['/api/v1/runs', '/queues', '/runs/RUN'])('answers %s with 401 before login', async (route) => {
    const response = await page.goto(`${fleet.coordinator.url}${route.replace('RUN', evaluation.runId)}`);

    expect(response?.status()).toBe(401);
  });

  it('logs in through the login page', async () => {
    await page.goto(`${fleet.coordinator.url}/login?next=%2F`);
    await page.fill('#token', fleet.token);
    await Promise.all([page.waitForURL(`${fleet.coordinator.url}/`), page.click('button[type=submit]')]);
    const session = (await context.cookies()).find((cookie) => cookie.name === 'cachefleet_session');

    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    expect(await page.locator(`#runs tr[data-run-id="${evaluation.runId}"]`).count()).toBe(1);
  });

  it('lists completed jobs on the dashboard', async () => {
    const buildId = evaluation.builds[0].buildId;

    await page.goto(`${fleet.coordinator.url}/queues/queue/extract?status=completed`);
    await page.getByText(`extract-${buildId}`).first().waitFor({ timeout: 30_000 });
    await page.screenshot({ path: path.join(screenshotDir, 'dashboard-extract.png'), fullPage: true });
    await page.goto(`${fleet.coordinator.url}/queues/queue/aggregate?status=completed`);
    await page.getByText(`aggregate-${evaluation.runId}`).first().waitFor({ timeout: 30_000 });

    expect(await page.getByText(`aggregate-${evaluation.runId}`).count()).toBeGreaterThan(0);
  });

  it('draws a heatmap cell per grid point', async () => {
    await page.goto(`${fleet.coordinator.url}/runs/${evaluation.runId}`);
    await page.screenshot({ path: path.join(screenshotDir, 'run-page.png'), fullPage: true });

    expect(await page.locator('#heatmap svg g.grid_cells_marks path').count()).toBe(DEFAULT_THETAS.length * DEFAULT_LAMBDAS.length);
  });

  it('marks the chosen theta and lambda', async () => {
    const chosen = page.locator('#heatmap svg g.chosen_cell_marks path');

    expect(await chosen.count()).toBe(1);
    expect(await chosen.getAttribute('aria-label')).toMatch(new RegExp(`^chosen: θ ${report.cache.theta}, λ ${report.cache.lambda}: validation accuracy`));
  });

  it('shows the test errors of the report', async () => {
    const result = await page.locator('#result').innerText();

    expect(result).toContain(`${(report.baseline.testError * 100).toFixed(2)} %`);
    expect(result).toContain(`${(report.cache.testError * 100).toFixed(2)} %`);
    expect(await page.locator('#per-class svg path[aria-label^="class "]').count()).toBeGreaterThan(0);
  });
});
