import {
  type ClientRequest,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
} from 'node:http';

export interface ProxyOptions {
  /** Answer every Nth request with 503 SlowDown instead of forwarding it. */
  throttleEvery?: number;
  /** Answer every Nth request with 429 Too Many Requests. */
  tooManyEvery?: number;
  /**
   * The first request `stall` matches is forwarded with only half its body, then held: the
   * server sees an upload that stops midway, as when the client dies. `stalled` resolves then.
   */
  stall?: (method: string, path: string) => boolean;
}

/** One request as the server (or the proxy) saw it. */
export interface LoggedRequest {
  method: string;
  path: string;
  status: number;
}

const SLOW_DOWN =
  '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>' +
  '<Message>Please reduce your request rate.</Message></Error>';

/**
 * An HTTP proxy in front of the S3 server that logs every request and, when asked, refuses
 * some as a busy S3 would. SigV4 signs the Host header, which the proxy passes on unchanged,
 * so the server accepts the forwarded requests.
 */
export class S3Proxy {
  readonly log: LoggedRequest[] = [];
  refused = 0;
  readonly stalled: Promise<LoggedRequest>;
  #count = 0;
  #onStall!: (r: LoggedRequest) => void;
  #stallUsed = false;

  private constructor(
    private readonly server: Server,
    readonly endpoint: string,
  ) {
    this.stalled = new Promise((resolve) => {
      this.#onStall = resolve;
    });
  }

  static async start(target: string, opts: ProxyOptions = {}): Promise<S3Proxy> {
    const to = new URL(target);
    let proxy: S3Proxy | undefined;
    const server = createServer((req, res) => {
      const n = ++proxy!.#count;
      const refuse = refusal(n, opts);
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      if (refuse) {
        // Read the body first, as a server would, so the client is not cut off mid-upload.
        req.resume();
        req.on('end', () => {
          proxy!.refused++;
          proxy!.log.push({ method, path, status: refuse });
          res.writeHead(refuse, { 'content-type': 'application/xml' });
          res.end(refuse === 503 ? SLOW_DOWN : '');
        });
        return;
      }
      const upstream = httpRequest(
        { host: to.hostname, port: to.port, method, path, headers: req.headers },
        (answer) => {
          proxy!.log.push({ method, path, status: answer.statusCode ?? 0 });
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      // The client gone (killed): the server sees the connection drop mid-request.
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      if (opts.stall && !proxy!.#stallUsed && opts.stall(method, path)) {
        proxy!.#stallUsed = true;
        proxy!.#forwardHalf(req, upstream, { method, path, status: 0 });
      } else {
        req.pipe(upstream);
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    proxy = new S3Proxy(server, `http://127.0.0.1:${port}`);
    return proxy;
  }

  #forwardHalf(req: IncomingMessage, upstream: ClientRequest, logged: LoggedRequest): void {
    const half = Number(req.headers['content-length'] ?? 0) / 2;
    let sent = 0;
    req.on('data', (chunk: Buffer) => {
      if (sent >= half) return;
      upstream.write(chunk.subarray(0, half - sent));
      sent += chunk.length;
      if (sent >= half) {
        req.pause();
        this.#onStall(logged);
      }
    });
  }

  /** GETs of keys under `/<bucket>/<prefix>` that the server answered. */
  gets(pathPrefix: string): LoggedRequest[] {
    return this.log.filter(
      (r) => r.method === 'GET' && r.status < 300 && r.path.startsWith(pathPrefix),
    );
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function refusal(n: number, opts: ProxyOptions): number | undefined {
  if (opts.throttleEvery && n % opts.throttleEvery === 0) return 503;
  if (opts.tooManyEvery && n % opts.tooManyEvery === 0) return 429;
  return undefined;
}
