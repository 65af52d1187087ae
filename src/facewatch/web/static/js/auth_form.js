// What the login and setup pages share: posting JSON and reading the server's error message.
// No secret is kept here: the server sets the session cookie (HttpOnly) itself.

/** A path on this site to go to after logging in: `?next=` when it is local, else "/". */
export function nextTarget(search = location.search) {
  const target = new URLSearchParams(search).get("next");
  // Only "/path": not "//host" or "/\host" (both leave the site), nor control characters,
  // which browsers strip before reading the URL.
  if (!target || !target.startsWith("/") || target.startsWith("//")) return "/";
  if (/[\\\u0000-\u001f\u007f]/.test(target)) return "/";
  return target;
}

/** POST `body` as JSON; resolves to {ok, status, body, retryAfter}. Never throws on an answer. */
export async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return {
    ok: response.ok,
    status: response.status,
    body: parsed,
    retryAfter: response.headers.get("Retry-After"),
  };
}

/** The message to show for a failed answer. */
export function errorMessage(answer) {
  const message = answer.body && answer.body.error && answer.body.error.message;
  return message || `the server answered ${answer.status}`;
}

/** Show `message` in `node` (a role="alert" element), or hide it when empty. */
export function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}
