// The VM list: live (polled), filtered, with create and delete.

import { act, age, button, field, h, list, parsePairs, statusLine, table } from "./dom.js";
import { api, apiAll, enc } from "./api.js";

// The egress choices the form offers, as the API's policy bodies.
const EGRESS = {
  "": undefined,
  allow: { default: "allow" },
  web: { allow_http: true, allow_https: true },
  deny: {},
};

function createForm(line, refresh) {
  const memory = h("input", { id: "memory", type: "number", min: "64", step: "64", value: "512" });
  const vcpus = h("input", { id: "vcpus", type: "number", min: "1", value: "1" });
  const image = h("input", { id: "image", placeholder: "default" });
  const snapshot = h("select", { id: "snapshot" }, h("option", { value: "" }, "none"));
  const provider = h("select", { id: "provider" },
    h("option", { value: "" }, "default"), h("option", { value: "container" }, "container"),
    h("option", { value: "microvm" }, "microvm"));
  const lifetime = h("input", { id: "lifetime", type: "number", min: "1", placeholder: "none" });
  const egress = h("select", { id: "egress" },
    h("option", { value: "" }, "server default"), h("option", { value: "allow" }, "allow all"),
    h("option", { value: "web" }, "HTTP(S) only"), h("option", { value: "deny" }, "deny all"));
  const env = h("textarea", { id: "env", rows: "2", placeholder: "NAME=value, one per line" });
  const volumes = h("input", { id: "volumes", placeholder: "volume_id:/mnt/path …" });
  const vaults = h("select", { id: "vaults", multiple: true, size: "2" });
  const submit = h("button", { type: "submit" }, "Create VM");

  // What the form can pick from: ready snapshots and vaults, by name.
  api("GET", "/v1/snapshots").then((all) => {
    for (const s of all.filter((s) => s.status === "ready")) {
      snapshot.append(h("option", { value: s.snapshot_id }, s.name || s.snapshot_id));
    }
  }).catch(() => {});
  api("GET", "/v1/vaults").then((v) => {
    for (const vault of v.vaults) vaults.append(h("option", { value: vault.vault_id }, vault.name));
  }).catch(() => {});

  async function create(event) {
    event.preventDefault();
    await act(submit, line, async () => {
      const body = { memory_mb: Number(memory.value), vcpu_count: Number(vcpus.value) };
      if (image.value.trim()) body.image_variant = image.value.trim();
      if (snapshot.value) body.snapshot_id = snapshot.value;
      if (provider.value) body.provider = provider.value;
      if (lifetime.value) body.vm_lifetime_seconds = Number(lifetime.value);
      if (EGRESS[egress.value]) body.egress_policy = EGRESS[egress.value];
      if (env.value.trim()) body.env = parsePairs(env.value, "env");
      const mounts = list(volumes.value).map((m) => {
        const [volume_id, mount_path] = m.split(":");
        if (!mount_path) throw new Error(`volumes: "${m}" is not volume_id:/path`);
        return { volume_id, mount_path };
      });
      if (mounts.length) body.volumes = mounts;
      const chosen = [...vaults.selectedOptions].map((o) => o.value);
      if (chosen.length) body.vault_ids = chosen;
      await api("POST", "/v1/vms?wait=true", body);
    }, "Creating…");
    refresh();
  }

  return h("form", { id: "create", onsubmit: create },
    field("Memory (MiB)", memory), field("vCPUs", vcpus), field("Image", image),
    field("Snapshot", snapshot), field("Provider", provider), field("Lifetime (s)", lifetime),
    field("Egress", egress), field("Env", env), field("Volumes", volumes), field("Vaults", vaults),
    submit);
}

function row(vm, shares, line, refresh) {
  const remove = button("Delete", () => act(remove, line, async () => {
    await api("DELETE", `/v1/vms/${enc(vm.vm_id)}`);
    await refresh();
  }, "Deleting…"), { kind: "danger", action: "delete" });
  const links = shares.map((s) => h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer" }, `:${s.port}`));
  return h("tr", { dataset: { vm: vm.vm_id } },
    h("td", { class: "id" }, h("a", { href: `#/vms/${enc(vm.vm_id)}` }, vm.vm_id)),
    h("td", { class: `status-${vm.status}` }, vm.status),
    h("td", {}, vm.provider || ""),
    h("td", {}, vm.image_variant || ""),
    h("td", {}, `${vm.memory_mb} MiB / ${vm.vcpu_count}`),
    h("td", {}, age(vm.created_at)),
    h("td", {}, vm.ip_address || ""),
    h("td", { class: "shares" }, links),
    h("td", {}, h("a", { class: "button", href: `#/vms/${enc(vm.vm_id)}`, dataset: { action: "open" } }, "Open"), " ", remove));
}

export function render(view) {
  const line = statusLine();
  line.id = "vms-error";
  const pollLine = statusLine();
  const filter = h("input", { id: "filter", placeholder: "id, status, image, provider" });
  const body = h("div", { id: "vm-list" });
  let listed = [];
  let shares = [];

  function draw() {
    const f = filter.value.trim().toLowerCase();
    const shown = listed.filter((vm) => vm.status !== "terminated")
      .filter((vm) => !f || [vm.vm_id, vm.status, vm.image_variant, vm.provider]
        .some((x) => (x || "").toLowerCase().includes(f)));
    const rows = shown.map((vm) => row(vm, shares.filter((s) => s.vm_id === vm.vm_id), line, refresh));
    const t = table(["VM", "Status", "Provider", "Image", "Memory / vCPUs", "Age", "IP", "Shares", ""], rows, "No VMs yet.");
    if (t.tagName === "TABLE") t.querySelector("tbody").id = "vms";
    body.replaceChildren(t);
    // When the list first showed, for the page-load bench.
    if (!performance.getEntriesByName("paddock:vms-listed").length) performance.mark("paddock:vms-listed");
  }

  async function refresh() {
    try {
      [listed, shares] = await Promise.all([apiAll("/v1/vms"), api("GET", "/v1/shares")]);
      pollLine.textContent = "";
      draw();
    } catch (e) {
      pollLine.textContent = e.message;
    }
  }

  filter.addEventListener("input", draw);
  view.append(h("h2", {}, "VMs"), createForm(line, refresh), line,
    field("Filter", filter), pollLine, body);
  refresh();
  const poll = setInterval(refresh, 2000);
  return () => clearInterval(poll);
}
