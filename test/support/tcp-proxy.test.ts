import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

interface Response {
  status: number;
  body: string;
}

/** Sends one request over `agent` (keep-alive, so several requests share a connection). */
function send(agent: http.Agent, port: number, method: string, path: string, body?: Buffer, chunked = false): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = chunked ? { 'transfer-encoding': 'chunked' } : body === undefined ? {} : { 'content-length': String(body.byteLength) };
    const request = http.request({ host: '127.0.0.1', port, method, path, agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      response.on('error', reject);
    });
    request.on('error', reject);
    if (body !== undefined && chunked) {
      // Several chunks, one of them containing a fake request line that must not be recorded.
      request.write(body.subarray(0, 10));
      request.write(Buffer.from('\r\nGET /fake HTTP/1.1\r\n\r\n'));
      request.end(body.subarray(10));
    } else {
      request.end(body);
    }
  });
}

describe('startTcpProxy', () => {
  let target: http.Server;
  let targetPort: number;
  let proxy: TcpProxy;
  let agent: http.Agent;

  beforeEach(async () => {
    target = http.createServer((request, response) => {
      let received = 0;
      request.on('data', (chunk: Buffer) => (received += chunk.byteLength));
      request.on('end', () => response.end(`${request.method} ${request.url} ${received}`));
    });
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    targetPort = (target.address() as AddressInfo).port;
    proxy = await startTcpProxy({ targetPort });
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });

  afterEach(async () => {
    agent.destroy();
    await proxy.close();
    await new Promise<void>((resolve) => target.close(() => resolve()));
  });

  it('forwards and records requests', async () => {
    const body = Buffer.alloc(200_000, 'GET / HTTP/1.1\r\n');

    const responses = [
      await send(agent, proxy.port, 'GET', '/bucket/key'),
      await send(agent, proxy.port, 'PUT', '/bucket/key?partNumber=1&uploadId=u1', body),
      await send(agent, proxy.port, 'POST', '/bucket/key?uploadId=u1', body, true),
      await send(agent, proxy.port, 'DELETE', '/bucket/key?uploadId=u1'),
    ];

    expect(responses.map((response) => response.body)).toEqual([
      'GET /bucket/key 0',
      'PUT /bucket/key?partNumber=1&uploadId=u1 200000',
      'POST /bucket/key?uploadId=u1 200024',
      'DELETE /bucket/key?uploadId=u1 0',
    ]);
    expect(proxy.requests.map((request) => request.line)).toEqual([
      'GET /bucket/key HTTP/1.1',
      'PUT /bucket/key?partNumber=1&uploadId=u1 HTTP/1.1',
      'POST /bucket/key?uploadId=u1 HTTP/1.1',
      'DELETE /bucket/key?uploadId=u1 HTTP/1.1',
    ]);
    expect(proxy.requests[3]).toMatchObject({ method: 'DELETE', target: '/bucket/key?uploadId=u1' });
    expect(proxy.bytes.fromClients).toBeGreaterThan(400_000);
    expect(proxy.bytes.fromTarget).toBeGreaterThan(0);
  });

  it('refuses connections while cut', async () => {
    await proxy.cut();

    await expect(send(agent, proxy.port, 'GET', '/a')).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await proxy.restore();

    expect((await send(agent, proxy.port, 'GET', '/b')).status).toBe(200);
  });

  it('resets open connections on cut', async () => {
    const slowTarget = http.createServer(() => {
      // Never responds, so the request is still open when the proxy is cut.
    });
    await new Promise<void>((resolve) => slowTarget.listen(0, '127.0.0.1', resolve));
    const slowProxy = await startTcpProxy({ targetPort: (slowTarget.address() as AddressInfo).port });

    const pending = send(agent, slowProxy.port, 'GET', '/hang');
    await new Promise((resolve) => setTimeout(resolve, 100));
    await slowProxy.cut();

    await expect(pending).rejects.toMatchObject({ code: 'ECONNRESET' });
    await slowProxy.close();
    slowTarget.closeAllConnections();
    await new Promise<void>((resolve) => slowTarget.close(() => resolve()));
  });
});
