import { escapeHtml, renderPage } from './html.js';

/**
 * Renders the login form. The token goes in a POST body, never in the URL, and the password
 * field keeps it out of the browser history. `next` is the page to return to after login.
 */
export function renderLoginPage(next: string, sessionTtlSeconds: number, error?: string): string {
  const message = error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(error)}</p>`;
  return renderPage({
    title: 'Log in',
    navigation: false,
    body: `<h1>Log in</h1>
${message}
<form class="login" method="post" action="/login">
  <label for="token">API token (the value of <code>CACHEFLEET_API_TOKEN</code> on the coordinator)</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <input type="hidden" name="next" value="${escapeHtml(next)}">
  <button type="submit">Log in</button>
</form>
<p>The session lasts ${escapeHtml(formatDuration(sessionTtlSeconds))}. Its cookie is sent only to this server.</p>`,
  });
}

/** Renders the body of a 401 response to a browser: a link to the login page that returns here. */
export function renderLoginRequiredPage(next: string): string {
  return renderPage({
    title: 'Login required',
    navigation: false,
    body: `<h1>Login required</h1>
<p>This page needs a session. <a href="/login?next=${escapeHtml(encodeURIComponent(next))}">Log in with the API token</a>.</p>`,
  });
}

function formatDuration(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
