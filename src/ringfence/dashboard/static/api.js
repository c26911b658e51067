// The API client of the dashboard: same-origin fetch with the session cookie, the CSRF
// token on every state change, and a redirect to sign-in when the session has ended.

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : { code: "http_" + status, message: "HTTP " + status };
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

let current = null;

export function toSignIn() {
  const next = location.pathname + location.search;
  location.assign("/signin?next=" + encodeURIComponent(next));
}

export async function api(path, { method = "GET", body, contentType = "application/json" } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = (await session()).csrf_token;
  }
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin", cache: "no-store" });
  if (response.status === 401 && path !== "/v1/session") {
    current = null;
    toSignIn();
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data);
  }
  return data;
}

// The signed-in session: name, scopes, audiences and the CSRF token.
export async function session() {
  if (current === null) {
    const response = await fetch("/v1/session", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      throw new ApiError(response.status, await response.json().catch(() => null));
    }
    current = await response.json();
  }
  return current;
}

export function can(sessionInfo, scope) {
  const scopes = sessionInfo.scopes || [];
  return scopes.includes(scope) || scopes.includes("admin");
}

export async function signOut() {
  try {
    await api("/v1/session", { method: "DELETE" });
  } finally {
    current = null;
    location.assign("/signin");
  }
}
