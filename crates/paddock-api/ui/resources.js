// The account's stored things: snapshots, images, volumes and their
// checkpoints, vaults (names and credential names; values are
// write-only), and API keys.

import { act, age, button, bytes, field, h, listPage, table } from "./dom.js";
import { api, enc } from "./api.js";

export function snapshots(view) {
  return listPage(view, "Snapshots", null, async (line, redraw) => {
    const all = await api("GET", "/v1/snapshots");
    return table(["Name", "Status", "Size", "From VM", "Age", ""], all.map((s) => {
      const start = s.status === "ready" && button("Start VM", () => act(start, line, async () => {
        const vm = await api("POST", "/v1/vms?wait=true", { snapshot_id: s.snapshot_id });
        location.hash = `#/vms/${enc(vm.vm_id)}`;
      }, "Starting a VM from it…"), { action: "start" });
      const remove = button("Delete", () => act(remove, line,
        () => api("DELETE", `/v1/snapshots/${enc(s.snapshot_id)}`)).then(redraw), { kind: "danger", action: "delete" });
      return h("tr", { dataset: { snapshot: s.snapshot_id } }, h("td", {}, s.name || s.snapshot_id),
        h("td", { class: `status-${s.status}` }, s.status + (s.last_error ? `: ${s.last_error}` : "")),
        h("td", {}, bytes(s.size_bytes)), h("td", { class: "id" }, s.vm_id || ""), h("td", {}, age(s.created_at)),
        h("td", {}, start, " ", remove));
    }), "No snapshots yet: take one from a VM's page.");
  }, { every: 2000 });
}

export function images(view) {
  // A pull's progress: its phase and bytes per layer, until done.
  const progress = h("div", { id: "pull-progress" });
  function showPull(pull) {
    const done = pull.layers.reduce((n, l) => n + (l.done || 0), 0);
    const total = pull.layers.reduce((n, l) => n + (l.total || 0), 0);
    const bar = h("progress", { max: String(total || 1), value: String(done) });
    progress.replaceChildren(h("p", {}, `${pull.reference}: ${pull.status}`, " ", total ? `${bytes(done)} of ${bytes(total)}` : ""),
      pull.status === "downloading" || pull.status === "resolving" ? bar : "",
      pull.error ? h("p", { class: "error" }, pull.error) : "");
    progress.dataset.status = pull.status;
  }
  function form(line, redraw) {
    const reference = h("input", { id: "pull-reference", placeholder: "registry/name:tag", required: true });
    const pull = h("button", { type: "submit" }, "Pull");
    return h("div", {}, h("form", { onsubmit: async (e) => {
      e.preventDefault();
      await act(pull, line, async () => {
        let state = await api("POST", "/v1/images", { reference: reference.value.trim() });
        showPull(state);
        while (state.status !== "done" && state.status !== "failed") {
          await new Promise((r) => setTimeout(r, 300));
          state = await api("GET", `/v1/images/pulls/${enc(state.pull_id)}`);
          showPull(state);
        }
      });
      redraw();
    } }, field("Image", reference, true), pull), progress);
  }
  return listPage(view, "Images", form, async (line, redraw) => {
    const all = await api("GET", "/v1/images");
    return table(["Reference", "Digest", "Size", "Layers", "Age", ""], all.map((i) => {
      const remove = button("Delete", () => act(remove, line,
        () => api("DELETE", `/v1/images/${enc(i.digest)}`)).then(redraw), { kind: "danger" });
      return h("tr", {}, h("td", {}, i.reference || ""), h("td", { class: "id" }, (i.digest || "").slice(0, 19)),
        h("td", {}, bytes(i.size)), h("td", {}, String((i.layers || []).length)), h("td", {}, age(i.created_at)), h("td", {}, remove));
    }), "No images pulled yet.");
  });
}

function checkpoints(volume, line) {
  const box = h("div", { class: "checkpoints" });
  const name = h("input", { placeholder: "checkpoint name" });
  const add = h("button", { type: "submit" }, "Checkpoint");
  async function load() {
    const all = await api("GET", `/v1/volumes/${enc(volume.volume_id)}/checkpoints`);
    box.replaceChildren(h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line, () => api("POST",
      `/v1/volumes/${enc(volume.volume_id)}/checkpoints`, name.value ? { name: name.value } : {})).then(load); } }, name, add),
    table(["Checkpoint", "Status", "Age", ""], all.map((c) => {
      const remove = button("Delete", () => act(remove, line,
        () => api("DELETE", `/v1/volumes/${enc(volume.volume_id)}/checkpoints/${enc(c.checkpoint_id)}`)).then(load), { kind: "danger" });
      return h("tr", {}, h("td", {}, c.name || c.checkpoint_id), h("td", {}, c.status), h("td", {}, age(c.created_at)), h("td", {}, remove));
    }), "No checkpoints."));
  }
  load().catch((e) => { line.textContent = e.message; });
  return box;
}

export function volumes(view) {
  const open = new Set();
  function form(line, redraw) {
    const name = h("input", { id: "volume-name", required: true });
    const quota = h("input", { id: "volume-quota", type: "number", min: "1", value: "1" });
    const add = h("button", { type: "submit" }, "Create volume");
    return h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line, () => api("POST", "/v1/volumes",
      { name: name.value.trim(), quota_bytes: Number(quota.value) * 1024 ** 3 })).then(redraw); } },
    field("Name", name), field("Quota (GiB)", quota), add);
  }
  return listPage(view, "Volumes", form, async (line, redraw) => {
    const all = await api("GET", "/v1/volumes");
    const rows = [];
    for (const v of all) {
      const toggle = button(open.has(v.volume_id) ? "Hide checkpoints" : "Checkpoints", () => {
        if (open.has(v.volume_id)) open.delete(v.volume_id); else open.add(v.volume_id);
        redraw();
      }, { kind: "secondary" });
      const remove = button("Delete", () => act(remove, line,
        () => api("DELETE", `/v1/volumes/${enc(v.volume_id)}`)).then(redraw), { kind: "danger" });
      rows.push(h("tr", {}, h("td", {}, v.name), h("td", { class: "id" }, v.volume_id), h("td", {}, v.status),
        h("td", {}, `${bytes(v.used_bytes)} of ${bytes(v.quota_bytes)}`), h("td", {}, String((v.mounts || []).length)),
        h("td", {}, toggle, " ", remove)));
      if (open.has(v.volume_id)) rows.push(h("tr", {}, h("td", { colspan: "6" }, checkpoints(v, line))));
    }
    return table(["Name", "Volume", "Status", "Used", "Mounts", ""], rows, "No volumes yet.");
  });
}

export function vaults(view) {
  function form(line, redraw) {
    const name = h("input", { id: "vault-name", required: true });
    const add = h("button", { type: "submit" }, "Create vault");
    return h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line,
      () => api("POST", "/v1/vaults", { name: name.value.trim() })).then(redraw); } }, field("Name", name), add);
  }
  return listPage(view, "Vaults", form, async (line, redraw) => {
    const { vaults: all } = await api("GET", "/v1/vaults");
    const cards = await Promise.all(all.map(async (v) => {
      const { credentials } = await api("GET", `/v1/vaults/${enc(v.vault_id)}/credentials`);
      // A credential's value goes in and never comes back out.
      const name = h("input", { placeholder: "ENV_NAME", required: true });
      const value = h("input", { type: "password", autocomplete: "off", placeholder: "value", required: true });
      const add = h("button", { type: "submit" }, "Add credential");
      const removeVault = button("Delete vault", () => act(removeVault, line,
        () => api("DELETE", `/v1/vaults/${enc(v.vault_id)}`)).then(redraw), { kind: "danger" });
      return h("div", { class: "card", dataset: { vault: v.vault_id } }, h("h3", {}, v.name, " ", removeVault),
        table(["Credential", "Type", "Rotated", ""], credentials.map((c) => {
          const remove = button("Delete", () => act(remove, line,
            () => api("DELETE", `/v1/vaults/${enc(v.vault_id)}/credentials/${enc(c.credential_id)}`)).then(redraw), { kind: "danger" });
          return h("tr", {}, h("td", { class: "credential" }, c.name), h("td", {}, c.credential_type),
            h("td", {}, c.rotated_at ? age(c.rotated_at) : "never"), h("td", {}, remove));
        }), "No credentials."),
        h("form", { onsubmit: (e) => { e.preventDefault(); act(add, line, () => api("POST",
          `/v1/vaults/${enc(v.vault_id)}/credentials`, { name: name.value.trim(), value: value.value })).then(redraw); } },
        name, value, add));
    }));
    return cards.length ? h("div", {}, cards) : h("p", { class: "empty" }, "No vaults yet.");
  });
}

export function keys(view) {
  const shown = h("p", { id: "new-key", class: "ok" });
  function form(line, redraw) {
    const name = h("input", { id: "key-name", placeholder: "api key" });
    const days = h("input", { id: "key-days", type: "number", min: "1", placeholder: "never" });
    const add = h("button", { type: "submit" }, "Create key");
    return h("div", {}, h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const body = {};
      if (name.value.trim()) body.name = name.value.trim();
      if (days.value) body.expires_in_days = Number(days.value);
      const made = await act(add, line, () => api("POST", "/v1/api-keys", body));
      // The only time a key's secret is shown: copy it now.
      if (made) shown.replaceChildren("New key (shown once): ", h("code", {}, made.key));
      redraw();
    } }, field("Name", name), field("Expires in days", days), add), shown);
  }
  return listPage(view, "API keys", form, async (line, redraw) => {
    const all = await api("GET", "/v1/api-keys");
    return table(["Name", "Prefix", "User", "Created", "Expires", ""], all.map((k) => {
      const remove = button("Revoke", () => act(remove, line,
        () => api("DELETE", `/v1/api-keys/${enc(k.id)}`)).then(redraw), { kind: "danger" });
      return h("tr", {}, h("td", {}, k.name), h("td", { class: "id" }, k.key_prefix), h("td", {}, k.user_email || ""),
        h("td", {}, age(k.created_at)), h("td", {}, k.expired ? "expired" : (k.expires_at || "never")), h("td", {}, remove));
    }));
  });
}
