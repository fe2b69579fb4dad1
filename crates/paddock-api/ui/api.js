// The API client the pages share. The key lives in this tab's session
// storage and goes out as X-API-Key (or, for a terminal's WebSocket, as
// a subprotocol); never in a URL, a cookie or a log.

const KEY = "paddock.key";

export const session = { me: null };

export const key = () => sessionStorage.getItem(KEY);
export const keepKey = (k) => sessionStorage.setItem(KEY, k);
// Signing out forgets the key and everything else the tab kept.
export const forgetKey = () => {
  for (const name of Object.keys(sessionStorage)) if (name.startsWith("paddock.")) sessionStorage.removeItem(name);
};

export const enc = encodeURIComponent;

// The message an error answer carries, in whichever surface's format:
// the VM API's `detail` (a string, or FastAPI's list of {loc, msg}), the
// gateway's `{error: {message}}`, definitions' `{errors: [{detail}]}`.
export function messageOf(status, data) {
  let message;
  if (data && typeof data === "object") {
    const { detail, error, title, errors } = data;
    if (Array.isArray(errors)) {
      message = errors.map((e) => e.detail || e.title || e.code).join("; ");
    } else if (Array.isArray(detail)) {
      message = detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    } else if (typeof detail === "string") {
      message = title && title !== detail ? `${title}: ${detail}` : detail;
    } else if (error && typeof error === "object") {
      message = error.message || JSON.stringify(error);
    } else if (typeof error === "string") {
      message = error;
    } else if (data.message) {
      message = data.message;
    } else {
      message = JSON.stringify(data);
    }
  } else {
    message = data || "no answer";
  }
  return `${status}: ${message}`;
}

export class ApiError extends Error {
  constructor(status, data) {
    super(messageOf(status, data));
    this.status = status;
    this.data = data;
  }
}

// The response itself, after the API answered 2xx; an ApiError otherwise.
export async function request(method, path, { body, headers = {}, raw } = {}) {
  const sent = { "X-API-Key": key() || "", ...headers };
  let payload = body;
  if (body !== undefined && !raw) {
    sent["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers: sent, body: payload, cache: "no-store", credentials: "omit" });
  if (!response.ok) {
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
    if (response.status === 401) window.dispatchEvent(new CustomEvent("paddock:unauthorized"));
    throw new ApiError(response.status, data);
  }
  return response;
}

// The API's answer as JSON (null when empty).
export async function api(method, path, body, headers) {
  const response = await request(method, path, { body, headers });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// Every item of a list the API pages with the `x-next-cursor` header
// (the VM list), a page of 1000 at a time.
export async function apiAll(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = `${path}${sep}limit=1000${cursor ? `&cursor=${enc(cursor)}` : ""}`;
    const response = await request("GET", page);
    items.push(...(await response.json()));
    cursor = response.headers.get("x-next-cursor");
  } while (cursor);
  return items;
}

// Runs a command in a VM and hands each NDJSON event (stdout, stderr,
// exit, error) to `onEvent` as it arrives.
export async function streamExec(vm, command, onEvent) {
  const response = await request("POST", `/v1/vms/${enc(vm)}/exec`, { body: { command } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) if (line.trim()) onEvent(JSON.parse(line));
  }
}

// PUTs a file's bytes to `path`, reporting progress (0..1). fetch has no
// upload progress, so this one call uses XMLHttpRequest.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", path);
    xhr.setRequestHeader("X-API-Key", key() || "");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = xhr.responseText;
      try { data = JSON.parse(xhr.responseText); } catch { /* keep the text */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new Error("the upload was cut off"));
    xhr.send(file);
  });
}

// Fetches `path` with the key and hands its bytes to the browser as a
// download named `name`.
export async function download(path, name) {
  const response = await request("GET", path);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
