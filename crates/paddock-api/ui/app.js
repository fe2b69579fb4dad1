// The dashboard: an API client in the browser. The key lives in this
// tab's session storage and goes out as X-API-Key; never in a URL or a
// cookie.

const KEY = "paddock.key";
const $ = (id) => document.getElementById(id);
let poll = null;

function key() {
  return sessionStorage.getItem(KEY);
}

// The API's answer as JSON, or an Error carrying the API's own message.
async function api(method, path, body) {
  const headers = { "X-API-Key": key() || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const detail = data && (data.detail || data.message || data.error);
    const message = typeof detail === "string" ? detail : (typeof data === "string" ? data : JSON.stringify(detail || data));
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function show(signedIn) {
  $("sign-in-view").hidden = signedIn;
  $("vms-view").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) $("who").textContent = "";
}

async function signIn(candidate) {
  sessionStorage.setItem(KEY, candidate);
  try {
    const me = await api("GET", "/v1/users/me");
    $("who").textContent = me.email || me.user_email || me.account_id || "";
    $("sign-in-error").textContent = "";
    show(true);
    await refresh();
    poll = setInterval(refresh, 2000);
  } catch (e) {
    sessionStorage.removeItem(KEY);
    $("sign-in-error").textContent = e.status === 401 ? "That key was refused." : e.message;
    show(false);
  }
}

function signOut() {
  clearInterval(poll);
  poll = null;
  sessionStorage.removeItem(KEY);
  closePanel();
  $("vms").replaceChildren();
  $("key").value = "";
  show(false);
}

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(vm) {
  const tr = document.createElement("tr");
  tr.dataset.vm = vm.vm_id;
  tr.append(
    cell(vm.vm_id, "id"),
    cell(vm.status, `status-${vm.status}`),
    cell(vm.provider || ""),
    cell(vm.image_variant || ""),
    cell(`${vm.memory_mb} MiB`),
    cell(String(vm.vcpu_count)),
    cell(age(vm.created_at)),
    cell(vm.ip_address || ""),
  );
  const actions = document.createElement("td");
  if (vm.status === "active") {
    const run = document.createElement("button");
    run.type = "button";
    run.textContent = "Run";
    run.dataset.action = "exec";
    run.addEventListener("click", () => openPanel(vm.vm_id));
    actions.append(run);
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "danger";
  remove.textContent = "Delete";
  remove.dataset.action = "delete";
  remove.addEventListener("click", () => removeVm(vm.vm_id, remove));
  actions.append(remove);
  tr.append(actions);
  return tr;
}

let listed = [];

function render() {
  const filter = $("filter").value.trim().toLowerCase();
  const shown = listed.filter((vm) => vm.status !== "terminated")
    .filter((vm) => !filter || [vm.vm_id, vm.status, vm.image_variant, vm.provider]
      .some((f) => (f || "").toLowerCase().includes(filter)));
  $("vms").replaceChildren(...shown.map(row));
  $("vms-empty").hidden = shown.length > 0;
}

async function refresh() {
  if (!key()) return;
  try {
    listed = await api("GET", "/v1/vms");
    $("vms-error").textContent = "";
    render();
  } catch (e) {
    if (e.status === 401) return signOut();
    $("vms-error").textContent = e.message;
  }
}

async function createVm(event) {
  event.preventDefault();
  const body = {
    memory_mb: Number($("memory").value),
    vcpu_count: Number($("vcpus").value),
  };
  if ($("image").value.trim()) body.image_variant = $("image").value.trim();
  if ($("lifetime").value) body.vm_lifetime_seconds = Number($("lifetime").value);
  const button = event.submitter;
  if (button) button.disabled = true;
  $("vms-error").textContent = "Creating…";
  try {
    await api("POST", "/v1/vms?wait=true", body);
    $("vms-error").textContent = "";
  } catch (e) {
    $("vms-error").textContent = e.message;
  } finally {
    if (button) button.disabled = false;
    await refresh();
  }
}

async function removeVm(id, button) {
  button.disabled = true;
  if (id === panelVm) closePanel();
  try {
    await api("DELETE", `/v1/vms/${encodeURIComponent(id)}`);
  } catch (e) {
    $("vms-error").textContent = e.message;
  }
  await refresh();
}

let panelVm = null;

function openPanel(id) {
  panelVm = id;
  $("panel-vm").textContent = id;
  $("exec-output").replaceChildren();
  $("vm-panel").hidden = false;
  $("command").focus();
}

function closePanel() {
  panelVm = null;
  $("vm-panel").hidden = true;
}

function output(text, className) {
  const span = document.createElement("span");
  span.textContent = text;
  if (className) span.className = className;
  $("exec-output").append(span);
  $("exec-output").scrollTop = $("exec-output").scrollHeight;
}

// Runs a command in the panel's VM, its output streamed as it comes
// (the exec endpoint answers NDJSON events).
async function runCommand(event) {
  event.preventDefault();
  const id = panelVm;
  const command = $("command").value;
  if (!id || !command) return;
  output(`$ ${command}\n`, "exit");
  const response = await fetch(`/v1/vms/${encodeURIComponent(id)}/exec`, {
    method: "POST",
    headers: { "X-API-Key": key() || "", "Content-Type": "application/json" },
    body: JSON.stringify({ command }),
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok || !response.body) {
    const text = await response.text();
    output(`${response.status}: ${text}\n`, "stderr");
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines.filter((l) => l.trim())) {
      const e = JSON.parse(line);
      if (e.type === "stdout") output(e.data);
      else if (e.type === "stderr") output(e.data, "stderr");
      else if (e.type === "exit") output(`[exit ${e.exit_code}]\n`, "exit");
      else if (e.type === "error") output(`${e.detail || JSON.stringify(e)}\n`, "stderr");
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("exec-form").addEventListener("submit", runCommand);
  $("panel-close").addEventListener("click", closePanel);
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  $("create").addEventListener("submit", createVm);
  $("filter").addEventListener("input", render);
  if (key()) signIn(key());
  else show(false);
});
