import { describe, expect, it } from 'vitest';

import { isLoopbackHost, validateServerSettings, type ServerSettings } from './server-config.js';

const TOKEN = 'a-long-enough-token-0123';

function settings(overrides: Partial<ServerSettings>): ServerSettings {
  return { host: '127.0.0.1', port: 0, token: undefined, metricsAuth: 'token', sessionTtlSeconds: 3600, bodyLimit: 1024, trustProxy: false, dashboardActions: false, ...overrides };
}

describe('isLoopbackHost', () => {
  it.each(['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost'])('treats %s as loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });

  it.each(['0.0.0.0', '::', '10.0.0.5', '192.168.1.2', 'example.org', '128.0.0.1'])('treats %s as reachable from outside', (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });
});

describe('validateServerSettings', () => {
  it('allows loopback without a token', () => {
    expect(validateServerSettings(settings({})).token).toBeUndefined();
  });

  it('rejects 0.0.0.0 without a token', () => {
    expect(() => validateServerSettings(settings({ host: '0.0.0.0' }))).toThrow(/listen on 0\.0\.0\.0, beyond loopback, without an API token\. Set CACHEFLEET_API_TOKEN/);
  });

  it('treats an empty token as unset', () => {
    expect(() => validateServerSettings(settings({ host: '0.0.0.0', token: '' }))).toThrow(/without an API token/);
  });

  it('allows 0.0.0.0 with a token', () => {
    expect(validateServerSettings(settings({ host: '0.0.0.0', token: TOKEN })).token).toBe(TOKEN);
  });

  it('rejects a short token without echoing it', () => {
    const attempt = () => validateServerSettings(settings({ token: 'short-secret' }));

    expect(attempt).toThrow(/has 12 characters; it needs at least 16/);
    expect(attempt).not.toThrow(/short-secret/);
  });

  it('rejects a token with whitespace', () => {
    expect(() => validateServerSettings(settings({ token: 'a token with spaces inside' }))).toThrow(/contains whitespace/);
  });

  it('rejects an unknown metrics setting', () => {
    expect(() => validateServerSettings(settings({ metricsAuth: 'open' as 'none' }))).toThrow(/Use token or none/);
  });
});
