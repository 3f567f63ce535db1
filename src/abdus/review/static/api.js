// The review API (same origin). A token, if the server uses one, comes from the URL fragment
// `#token=...` (never sent to the server in the URL) and goes out as `Authorization: Bearer`.

const token = new URLSearchParams(location.hash.slice(1)).get("token");

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.detail !== undefined) {
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

export const api = {
  taxonomy: async () => (await request("/api/taxonomy")).json(),
  items: async (view, status) => {
    const query = new URLSearchParams();
    if (view) query.set("view", view);
    if (status) query.set("status", status);
    return (await request(`/api/items?${query}`)).json();
  },
  item: async (id) => (await request(`/api/items/${encodeURIComponent(id)}`)).json(),
  // The frame as a decoded <img> source: an object URL of the PNG (fetched with the token).
  image: async (id) => {
    const blob = await (await request(`/api/items/${encodeURIComponent(id)}/image`)).blob();
    return URL.createObjectURL(blob);
  },
  exportAll: async () => (await request("/api/export", { method: "POST" })).json(),
  save: async (id, body) =>
    (await request(`/api/items/${encodeURIComponent(id)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })).json(),
};
