import { CachefleetError } from '../errors.js';

/** How to reach an S3-compatible service (AWS S3, MinIO, s3rver). */
export interface S3ConnectionOptions {
  /**
   * Service URL, such as `http://127.0.0.1:9000` for MinIO. Absent means AWS S3's regional
   * endpoint for `region`. The URL may not contain credentials.
   */
  endpoint?: string;
  /** Region used for signing and, without `endpoint`, for the AWS endpoint. Default `us-east-1`. */
  region?: string;
  /** Puts the bucket in the path instead of the host name. Default: true when `endpoint` is set. */
  forcePathStyle?: boolean;
  /**
   * Access key pair. Required with a custom `endpoint`. Without either, the AWS SDK's default
   * provider chain applies (environment, shared files, container or instance roles).
   */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Time allowed to open a TCP connection, in milliseconds. Default 5,000. */
  connectionTimeoutMs?: number;
  /** Time a socket may stay idle mid-request before the request fails, in milliseconds. Default 30,000. */
  socketTimeoutMs?: number;
}

export const DEFAULT_REGION = 'us-east-1';

/**
 * Reads connection settings from `S3_ENDPOINT`, `S3_REGION`, `S3_FORCE_PATH_STYLE`,
 * `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`. Unset variables stay
 * unset, so explicit options can fill them.
 */
export function readS3ConnectionFromEnv(env: NodeJS.ProcessEnv = process.env): S3ConnectionOptions {
  const connection: S3ConnectionOptions = {};

  if (nonEmpty(env.S3_ENDPOINT)) {
    connection.endpoint = env.S3_ENDPOINT;
  }
  if (nonEmpty(env.S3_REGION)) {
    connection.region = env.S3_REGION;
  }
  if (nonEmpty(env.S3_FORCE_PATH_STYLE)) {
    connection.forcePathStyle = parseBooleanVariable('S3_FORCE_PATH_STYLE', env.S3_FORCE_PATH_STYLE);
  }
  if (nonEmpty(env.AWS_ACCESS_KEY_ID) && nonEmpty(env.AWS_SECRET_ACCESS_KEY)) {
    connection.credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(nonEmpty(env.AWS_SESSION_TOKEN) ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    };
  }

  return connection;
}

/** Merges connection settings; fields of `overrides` that are undefined keep the value of `base`. */
export function mergeConnection(base: S3ConnectionOptions, overrides: S3ConnectionOptions = {}): S3ConnectionOptions {
  const defined = Object.entries(overrides).filter(([, value]) => value !== undefined);
  return { ...base, ...Object.fromEntries(defined) };
}

/** Endpoint for messages and logs: the configured URL, or the AWS default for the region. */
export function describeEndpoint(connection: S3ConnectionOptions): string {
  if (connection.endpoint !== undefined) {
    return validateEndpoint(connection.endpoint);
  }
  return `https://s3.${connection.region ?? DEFAULT_REGION}.amazonaws.com`;
}

/** Checks that an endpoint is an http(s) URL without credentials and returns it without a trailing slash. */
export function validateEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new CachefleetError('INVALID_ARGUMENT', `S3 endpoint ${JSON.stringify(endpoint)} is not a valid URL. Use a URL such as http://127.0.0.1:9000.`, { endpoint });
  }

  if (url.username !== '' || url.password !== '') {
    // The message shows the host only, so that the secret does not reach logs.
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `S3 endpoint for host ${url.host} contains credentials. Remove them from the URL and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`,
      { host: url.host },
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CachefleetError('INVALID_ARGUMENT', `S3 endpoint ${JSON.stringify(endpoint)} has protocol ${url.protocol}; use http: or https:.`, { endpoint });
  }

  return url.href.replace(/\/$/, '');
}

function parseBooleanVariable(name: string, value: string): boolean {
  const normalized = value.trim().toLowerCase();
  if (normalized === 'true' || normalized === '1') {
    return true;
  }
  if (normalized === 'false' || normalized === '0') {
    return false;
  }
  throw new CachefleetError('INVALID_ARGUMENT', `${name}=${JSON.stringify(value)} is invalid. Use true, false, 1 or 0.`, { name, value });
}

function nonEmpty(value: string | undefined): value is string {
  return value !== undefined && value !== '';
}
