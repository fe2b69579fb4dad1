// A VM's page: what it is, its actions (clone, snapshot, suspend or
// resume, delete) and tabs for its terminal, files, commands, shares,
// egress policy, volumes and live CPU and memory graphs.

import { act, age, button, bytes, field, h, list, statusLine, table } from "./dom.js";
import { api, enc, streamExec } from "./api.js";
import { terminal } from "./terminal.js";
import { files } from "./files.js";

function details(vm) {
  const item = (name, value) => [h("dt", {}, name), h("dd", {}, value === undefined || value === null ? "" : String(value))];
  return h("dl", { class: "details" },
    item("Status", vm.status + (vm.status_reason ? ` (${vm.status_reason})` : "")),
    item("Provider", vm.provider), item("Image", vm.image_variant),
    item("Memory", `${vm.memory_mb} MiB`), item("vCPUs", vm.vcpu_count),
    item("IP", vm.ip_address), item("Age", age(vm.created_at)),
    item("Expires", vm.expires_at || "never"), item("Session", vm.session_id));
}

function actions(vm, line, reload) {
  const id = enc(vm.vm_id);
  const clone = button("Clone", () => act(clone, line,
    () => api("POST", `/v1/vms/${id}/clone`, {}), "Cloning…").then((a) => {
    if (a) location.hash = `#/vms/${enc(a.vm_id)}`;
    else reload();
  }), { action: "clone" });
  const snapshot = button("Snapshot", () => act(snapshot, line, async () => {
    const s = await api("POST", `/v1/vms/${id}/snapshot`, {});
    line.textContent = `Snapshot ${s.name || s.snapshot_id}: ${s.status}`;
    line.classList.add("ok");
    return s;
  }, "Taking a snapshot…").then((s) => { if (s) location.hash = "#/snapshots"; }), { action: "snapshot" });
  const suspend = button("Suspend", () => act(suspend, line,
    () => api("POST", `/v1/vms/${id}/suspend`), "Suspending…").then(reload), { action: "suspend" });
  const resume = button("Resume", () => act(resume, line,
    () => api("POST", `/v1/vms/${id}/resume`), "Resuming…").then(reload), { action: "resume" });
  const remove = button("Delete", () => act(remove, line,
    () => api("DELETE", `/v1/vms/${id}`), "Deleting…").then((a) => { if (a) location.hash = "#/vms"; }), { kind: "danger", action: "delete" });
  const running = vm.status === "active";
  return h("div", { class: "actions" }, running && clone, running && snapshot, running && suspend,
    vm.status === "suspended" && resume, vm.status !== "terminated" && remove);
}

// Runs commands, their output streamed as it comes.
function run(pane, vm) {
  const command = h("input", { id: "command", autocomplete: "off", required: true });
  const out = h("pre", { id: "exec-output" });
  const print = (text, cls) => {
    out.append(h("span", { class: cls }, text));
    out.scrollTop = out.scrollHeight;
  };
  async function submit(event) {
    event.preventDefault();
    const text = command.value;
    if (!text) return;
    print(`$ ${text}\n`, "exit");
    try {
      await streamExec(vm.vm_id, text, (e) => {
        if (e.type === "stdout") print(e.data);
        else if (e.type === "stderr") print(e.data, "stderr");
        else if (e.type === "exit") print(`[exit ${e.exit_code}]\n`, "exit");
        else if (e.type === "error") print(`${e.detail || JSON.stringify(e)}\n`, "stderr");
      });
    } catch (e) {
      print(`${e.message}\n`, "stderr");
    }
  }
  pane.append(h("form", { id: "exec-form", onsubmit: submit },
    field("Command", command, true), h("button", { type: "submit" }, "Run")), out);
}

function shares(pane, vm) {
  const line = statusLine();
  const body = h("div");
  const port = h("input", { id: "share-port", type: "number", min: "1", max: "65535", value: "8080" });
  const isPublic = h("input", { id: "share-public", type: "checkbox" });
  async function load() {
    try {
      const all = await api("GET", `/v1/vms/${enc(vm.vm_id)}/shares`);
      body.replaceChildren(table(["Port", "URL", "Public", ""], all.map((s) => {
        const toggle = button(s.is_public ? "Make private" : "Make public", () => act(toggle, line,
          () => api("PATCH", `/v1/shares/${enc(s.share_id)}`, { is_public: !s.is_public })).then(load), { action: "toggle" });
        const revoke = button("Revoke", () => act(revoke, line,
          () => api("DELETE", `/v1/vms/${enc(vm.vm_id)}/shares/${enc(s.share_id)}`)).then(load), { kind: "danger", action: "revoke" });
        return h("tr", { dataset: { share: s.share_id } }, h("td", {}, String(s.port)),
          h("td", {}, h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer" }, s.url)),
          h("td", {}, s.is_public ? "yes" : "no (token)"), h("td", {}, toggle, " ", revoke));
      }), "No shares."));
    } catch (e) { line.textContent = e.message; }
  }
  const add = h("button", { type: "submit" }, "Share port");
  pane.append(h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line,
    () => api("POST", `/v1/vms/${enc(vm.vm_id)}/shares`, { port: Number(port.value), is_public: isPublic.checked })).then(load); } },
  field("Port", port), h("label", { class: "check" }, isPublic, "public"), add), line, body);
  load();
}

function egress(pane, vm) {
  const line = statusLine();
  const fields = {
    default: h("select", { id: "egress-default" }, h("option", { value: "deny" }, "deny"), h("option", { value: "allow" }, "allow")),
    allow_http: h("input", { type: "checkbox" }), allow_https: h("input", { type: "checkbox" }),
    allow_public_repos: h("input", { type: "checkbox" }),
    allowed_domains: h("input", { placeholder: "example.com, *.example.org" }),
    allowed_cidrs: h("input", { placeholder: "10.1.0.0/16" }), denied_cidrs: h("input", { placeholder: "" }),
  };
  const fill = (p) => {
    fields.default.value = p.default || "deny";
    for (const k of ["allow_http", "allow_https", "allow_public_repos"]) fields[k].checked = !!p[k];
    for (const k of ["allowed_domains", "allowed_cidrs", "denied_cidrs"]) fields[k].value = (p[k] || []).join(", ");
  };
  const save = h("button", { type: "submit" }, "Save policy");
  async function submit(event) {
    event.preventDefault();
    const body = { default: fields.default.value };
    for (const k of ["allow_http", "allow_https", "allow_public_repos"]) body[k] = fields[k].checked;
    for (const k of ["allowed_domains", "allowed_cidrs", "denied_cidrs"]) body[k] = list(fields[k].value);
    const saved = await act(save, line, () => api("POST", `/v1/egress/vm/${enc(vm.vm_id)}`, body), "Saving…");
    if (saved) { fill(saved); line.textContent = "Saved."; line.classList.add("ok"); }
  }
  pane.append(h("form", { id: "egress-form", onsubmit: submit },
    field("Default", fields.default),
    h("label", { class: "check" }, fields.allow_http, "HTTP anywhere"),
    h("label", { class: "check" }, fields.allow_https, "HTTPS anywhere"),
    h("label", { class: "check" }, fields.allow_public_repos, "public package registries"),
    field("Allowed domains", fields.allowed_domains, true), field("Allowed CIDRs", fields.allowed_cidrs),
    field("Denied CIDRs", fields.denied_cidrs), save), line);
  api("GET", `/v1/egress/vm/${enc(vm.vm_id)}`).then(fill).catch((e) => { line.textContent = e.message; });
}

function volumes(pane, vm) {
  const line = statusLine();
  const body = h("div");
  const volume = h("select", { id: "mount-volume" });
  const path = h("input", { id: "mount-path", value: "/data" });
  const mode = h("select", {}, h("option", { value: "rw" }, "read-write"), h("option", { value: "ro" }, "read-only"));
  async function load() {
    try {
      const mounts = await api("GET", `/v1/vms/${enc(vm.vm_id)}/volumes`);
      body.replaceChildren(table(["Volume", "Path", "Mode", "Status", ""], mounts.map((m) => {
        const unmount = button("Unmount", () => act(unmount, line,
          () => api("DELETE", `/v1/vms/${enc(vm.vm_id)}/volumes/${enc(m.volume_id)}`)).then(load), { kind: "danger" });
        return h("tr", {}, h("td", { class: "id" }, m.volume_id), h("td", {}, m.mount_path), h("td", {}, m.mode),
          h("td", {}, m.status), h("td", {}, unmount));
      }), "No volumes mounted."));
    } catch (e) { line.textContent = e.message; }
  }
  api("GET", "/v1/volumes").then((all) => {
    volume.replaceChildren(...all.map((v) => h("option", { value: v.volume_id }, v.name || v.volume_id)));
  }).catch(() => {});
  const add = h("button", { type: "submit" }, "Mount");
  pane.append(h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line, () => api("POST", `/v1/vms/${enc(vm.vm_id)}/volumes`,
    { volume_id: volume.value, mount_path: path.value, mode: mode.value })).then(load); } },
  field("Volume", volume), field("Path", path), field("Mode", mode), add), line, body);
  load();
}

// A line graph of the last samples on a canvas (drawn by script, so the
// page's policy needs no inline styles).
function graph(canvas, samples, max, label) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#10141c";
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = "#6fb0ff";
  ctx.lineWidth = 2;
  ctx.beginPath();
  samples.forEach((v, i) => {
    const x = (i / Math.max(1, METRIC_SAMPLES - 1)) * width;
    const y = height - (Math.min(v, max) / max) * (height - 20) - 4;
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#e6e9ef";
  ctx.font = "12px sans-serif";
  ctx.fillText(label, 8, 14);
}

const METRIC_SAMPLES = 60;

function metrics(pane, vm) {
  const line = statusLine();
  const cpu = h("canvas", { id: "cpu-graph", width: "520", height: "140" });
  const memory = h("canvas", { id: "memory-graph", width: "520", height: "140" });
  const cpuSamples = [];
  const memorySamples = [];
  let last = null;
  async function sample() {
    try {
      const m = await api("GET", `/v1/vms/${enc(vm.vm_id)}/metrics`);
      const now = Date.parse(m.sampled_at);
      if (last && m.cpu_seconds !== null && now > last.at) {
        const pct = ((m.cpu_seconds - last.cpu) / ((now - last.at) / 1000)) * 100;
        cpuSamples.push(Math.max(0, pct));
      }
      last = { at: now, cpu: m.cpu_seconds };
      if (m.memory_bytes !== null) memorySamples.push(m.memory_bytes);
      for (const s of [cpuSamples, memorySamples]) while (s.length > METRIC_SAMPLES) s.shift();
      const cpuMax = 100 * m.vcpu_count;
      const latestCpu = cpuSamples.length ? cpuSamples[cpuSamples.length - 1].toFixed(1) : "…";
      graph(cpu, cpuSamples, cpuMax, `CPU ${latestCpu}% of ${cpuMax}%`);
      graph(memory, memorySamples, m.memory_limit_bytes,
        `Memory ${bytes(m.memory_bytes)} of ${bytes(m.memory_limit_bytes)}`);
      cpu.dataset.samples = String(cpuSamples.length);
      memory.dataset.latest = String(m.memory_bytes);
      line.textContent = "";
    } catch (e) { line.textContent = e.message; }
  }
  pane.append(h("div", { class: "graphs" }, cpu, memory), line);
  sample();
  const poll = setInterval(sample, 1000);
  return () => clearInterval(poll);
}

const TABS = [
  ["terminal", "Terminal", terminal], ["files", "Files", files], ["run", "Run", run],
  ["shares", "Shares", shares], ["egress", "Egress", egress], ["volumes", "Volumes", volumes],
  ["metrics", "Metrics", metrics],
];

export function render(view, id) {
  const line = statusLine();
  line.id = "vm-error";
  const head = h("div");
  const tabs = h("nav", { class: "tabs" });
  const pane = h("div", { id: "tab-pane" });
  let stopTab = null;
  let current = null;
  let shownStatus = null;

  function open(vm, name) {
    if (stopTab) stopTab();
    stopTab = null;
    current = name;
    for (const b of tabs.children) b.classList.toggle("current", b.dataset.tab === name);
    pane.replaceChildren();
    pane.dataset.tab = name;
    const [, , make] = TABS.find(([n]) => n === name);
    stopTab = make(pane, vm) || null;
  }

  async function reload() {
    try {
      const vm = await api("GET", `/v1/vms/${enc(id)}`);
      head.replaceChildren(h("h2", {}, "VM ", h("span", { class: "id" }, vm.vm_id)), details(vm), actions(vm, line, reload));
      if (!performance.getEntriesByName("paddock:vm-shown").length) performance.mark("paddock:vm-shown");
      if (vm.status !== shownStatus) {
        shownStatus = vm.status;
        tabs.replaceChildren(...TABS.map(([name, label]) => {
          const b = button(label, () => open(vm, name), { kind: "tab" });
          b.dataset.tab = name;
          return b;
        }));
        if (vm.status === "active") open(vm, current || "terminal");
        else { if (stopTab) stopTab(); stopTab = null; pane.replaceChildren(h("p", { class: "empty" }, `The VM is ${vm.status}.`)); }
      }
    } catch (e) {
      line.textContent = e.message;
    }
  }

  view.append(head, line, tabs, pane);
  reload();
  const poll = setInterval(reload, 3000);
  return () => { clearInterval(poll); if (stopTab) stopTab(); };
}
