import net from 'node:net';

/** One HTTP request seen on its way through the proxy. */
export interface RecordedRequest {
  method: string;
  /** Request target as sent, path and query string, such as `/bucket/key?uploadId=abc`. */
  target: string;
  /** The request line without its line ending. */
  line: string;
}

export interface TcpProxy {
  /** Address to give clients instead of the target, such as `http://127.0.0.1:40123`. */
  readonly url: string;
  readonly port: number;
  /** HTTP requests seen so far, in the order their headers arrived. */
  readonly requests: RecordedRequest[];
  /** Bytes forwarded from clients to the target and back. */
  readonly bytes: { fromClients: number; fromTarget: number };
  /** Resets every open connection (clients see ECONNRESET) and closes the listener (ECONNREFUSED). */
  cut(): Promise<void>;
  /** Listens again on the same port after `cut()`. */
  restore(): Promise<void>;
  /** Stops for good, like `cut()`. */
  close(): Promise<void>;
}

export interface TcpProxyOptions {
  targetPort: number;
  /** Default 127.0.0.1. */
  targetHost?: string;
}

// Request heads larger than this are not parsed; S3 request heads are a few kilobytes.
const MAX_HEAD_BYTES = 64 * 1024;

/**
 * Starts a TCP proxy on 127.0.0.1 (random port) for tests that need to break or observe the
 * connection to a server. Besides forwarding bytes, it follows HTTP/1.1 request framing
 * (Content-Length and chunked bodies) on the client side and records every request line, so a
 * test can prove that a request was sent even when the server rejected it.
 */
export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const targetHost = options.targetHost ?? '127.0.0.1';
  const sockets = new Set<net.Socket>();
  const requests: RecordedRequest[] = [];
  const bytes = { fromClients: 0, fromTarget: 0 };

  const server = net.createServer((client) => {
    const upstream = net.connect({ host: targetHost, port: options.targetPort });
    const parser = new RequestLineRecorder((request) => requests.push(request));
    sockets.add(client);
    sockets.add(upstream);

    client.on('data', (chunk: Buffer) => {
      bytes.fromClients += chunk.byteLength;
      parser.push(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      bytes.fromTarget += chunk.byteLength;
    });
    client.pipe(upstream);
    upstream.pipe(client);

    // Either side failing ends both, so the client sees the failure as a reset connection.
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', closeBoth);
    upstream.on('error', () => client.resetAndDestroy());
    client.on('close', () => {
      sockets.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => {
      sockets.delete(upstream);
      client.end();
    });
  });

  await listen(server, 0);
  const address = server.address();
  if (address === null || typeof address === 'string') {
    throw new Error('TCP proxy did not get a TCP port from the operating system.');
  }
  const port = address.port;

  let listening = true;
  const cut = async () => {
    if (listening) {
      listening = false;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) {
          socket.resetAndDestroy();
        }
      });
    }
    for (const socket of sockets) {
      socket.resetAndDestroy();
    }
  };

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    bytes,
    cut,
    async restore() {
      if (!listening) {
        await listen(server, port);
        listening = true;
      }
    },
    close: cut,
  };
}

function listen(server: net.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => {
      reject(new Error(`TCP proxy could not listen on 127.0.0.1:${port}: ${error.message}`));
    };
    server.once('error', onError);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', onError);
      resolve();
    });
  });
}

type ParserState =
  | { kind: 'head' }
  | { kind: 'body'; remaining: number }
  | { kind: 'chunk-size' }
  | { kind: 'chunk-data'; remaining: number }
  | { kind: 'trailer' }
  | { kind: 'stopped' };

/**
 * Follows the client side of one HTTP/1.1 connection and reports each request line. Bodies are
 * skipped by length without being stored.
 */
// NOTE: a client that sends `Expect: 100-continue`, receives a final error status and then reuses
// the connection without sending the body would desynchronise this parser. The AWS SDK v3 opens a
// fresh connection for such requests, so S3 tests are not affected.
class RequestLineRecorder {
  private state: ParserState = { kind: 'head' };
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly onRequest: (request: RecordedRequest) => void) {}

  push(chunk: Buffer): void {
    let data: Buffer = this.pending.byteLength === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = Buffer.alloc(0);

    while (data.byteLength > 0 && this.state.kind !== 'stopped') {
      const consumed = this.step(data);
      if (consumed === 0) {
        // The current element is incomplete: keep it for the next chunk.
        this.pending = data;
        if (this.pending.byteLength > MAX_HEAD_BYTES) {
          this.state = { kind: 'stopped' };
        }
        return;
      }
      data = data.subarray(consumed);
    }
  }

  /** Consumes one element from the front of `data` and returns its length, or 0 if incomplete. */
  private step(data: Buffer): number {
    switch (this.state.kind) {
      case 'head':
        return this.readHead(data);
      case 'body':
      case 'chunk-data': {
        const consumed = Math.min(this.state.remaining, data.byteLength);
        this.state.remaining -= consumed;
        if (this.state.remaining === 0) {
          this.state = this.state.kind === 'body' ? { kind: 'head' } : { kind: 'chunk-size' };
        }
        return consumed;
      }
      case 'chunk-size': {
        const end = data.indexOf('\r\n');
        if (end === -1) {
          return 0;
        }
        const size = Number.parseInt(data.subarray(0, end).toString('latin1').split(';')[0], 16);
        // Each chunk's data is followed by CRLF, counted into the data to skip.
        this.state = Number.isNaN(size) ? { kind: 'stopped' } : size === 0 ? { kind: 'trailer' } : { kind: 'chunk-data', remaining: size + 2 };
        return end + 2;
      }
      case 'trailer': {
        const end = data.indexOf('\r\n');
        if (end === -1) {
          return 0;
        }
        if (end === 0) {
          this.state = { kind: 'head' };
        }
        return end + 2;
      }
      case 'stopped':
        return data.byteLength;
    }
  }

  private readHead(data: Buffer): number {
    const end = data.indexOf('\r\n\r\n');
    if (end === -1) {
      return 0;
    }

    const lines = data.subarray(0, end).toString('latin1').split('\r\n');
    const line = lines[0];
    const [method, target] = line.split(' ');
    this.onRequest({ method, target, line });

    const headers = new Map<string, string>();
    for (const header of lines.slice(1)) {
      const colon = header.indexOf(':');
      if (colon > 0) {
        headers.set(header.slice(0, colon).trim().toLowerCase(), header.slice(colon + 1).trim());
      }
    }

    if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) {
      this.state = { kind: 'chunk-size' };
    } else {
      const length = Number(headers.get('content-length') ?? '0');
      this.state = length > 0 ? { kind: 'body', remaining: length } : Number.isNaN(length) ? { kind: 'stopped' } : { kind: 'head' };
    }
    return end + 4;
  }
}
