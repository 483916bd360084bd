import type { FastifyReply } from 'fastify';

/** Escapes text for HTML element content and double-quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

/**
 * Content-Security-Policy of the coordinator's own pages: scripts only from this server (no
 * inline script), inline styles for the page's stylesheet and the SVG charts, no framing.
 */
const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 0.6rem 1.5rem; display: flex; gap: 1.5rem; align-items: center; }
header a { color: #cfe0ff; text-decoration: none; }
header form { margin-left: auto; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.4rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.8rem 0 0.6rem; }
table { border-collapse: collapse; background: #fff; margin: 0.4rem 0; }
th, td { border: 1px solid #d8dce3; padding: 0.3rem 0.6rem; text-align: left; font-size: 0.9rem; }
th { background: #eef0f4; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
progress { width: 14rem; }
.state { font-weight: 600; padding: 0.1rem 0.5rem; border-radius: 0.3rem; background: #e4e7ec; }
.state-completed { background: #d3f2dc; } .state-failed, .state-lost { background: #f9d6d5; }
.state-running { background: #d8e6fd; } .state-cancelling, .state-cancelled { background: #fbe9c6; }
.error { color: #a1110a; }
.figure { background: #fff; border: 1px solid #d8dce3; padding: 0.5rem; display: inline-block; }
form.login { background: #fff; border: 1px solid #d8dce3; padding: 1rem 1.5rem; max-width: 26rem; }
form.login input[type=password] { width: 100%; box-sizing: border-box; padding: 0.4rem; margin: 0.4rem 0 0.8rem; }
code { background: #eef0f4; padding: 0 0.2rem; }
`;

export interface PageOptions {
  title: string;
  body: string;
  /** Scripts served by this server, such as `/assets/run-page.js`. */
  scripts?: string[];
  /** Shows the navigation and the logout button (off on the login page). */
  navigation?: boolean;
}

/** Renders a complete HTML document around `body`, which must already be escaped. */
export function renderPage(options: PageOptions): string {
  const scripts = (options.scripts ?? []).map((src) => `<script src="${escapeHtml(src)}" defer></script>`).join('\n');
  const navigation =
    options.navigation === false
      ? '<header><strong>cachefleet</strong></header>'
      : `<header><strong>cachefleet</strong><a href="/">Runs</a><a href="/queues">Queues</a><a href="/docs">API</a>
<form method="post" action="/logout"><button type="submit">Log out</button></form></header>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(options.title)} · cachefleet</title>
<style>${STYLE}</style>
${scripts}
</head>
<body>
${navigation}
<main>
${options.body}
</main>
</body>
</html>
`;
}

/** Sends an HTML page with the pages' security headers. */
export function sendPage(reply: FastifyReply, html: string, status = 200): FastifyReply {
  return reply
    .code(status)
    .header('content-security-policy', PAGE_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(html);
}
