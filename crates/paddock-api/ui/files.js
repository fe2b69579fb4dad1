// A VM's files: browse directories, upload with progress, download,
// delete. Uses the streamed `/v1/vms/{vm_id}/files?path=` routes.

import { act, bytes, button, h, statusLine, table } from "./dom.js";
import { api, download, enc, upload } from "./api.js";

const join = (dir, name) => (dir.endsWith("/") ? dir : `${dir}/`) + name;
const parent = (dir) => dir.replace(/\/[^/]+\/?$/, "") || "/";

export function files(pane, vm) {
  const base = `/v1/vms/${enc(vm.vm_id)}/files`;
  const line = statusLine();
  line.id = "files-status";
  const where = h("input", { id: "files-path", value: "/root" });
  const body = h("div", { id: "files" });
  const picker = h("input", { id: "upload-input", type: "file", multiple: true });
  const progress = h("progress", { id: "upload-progress", max: "1", value: "0" });
  progress.hidden = true;
  let dir = "/root";

  async function load(path) {
    try {
      const listing = await api("GET", `${base}?path=${enc(path)}`);
      dir = listing.path;
      where.value = dir;
      line.textContent = "";
      const rows = listing.entries
        .sort((a, b) => (b.type === "directory") - (a.type === "directory") || a.name.localeCompare(b.name))
        .map((entry) => {
          const path = join(dir, entry.name);
          const isDir = entry.type === "directory";
          const name = isDir
            ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); load(path); } }, `${entry.name}/`)
            : entry.name;
          const get = !isDir && button("Download", () => act(get, line,
            () => download(`${base}?path=${enc(path)}`, entry.name)), { kind: "secondary", action: "download" });
          const remove = button("Delete", () => act(remove, line,
            () => api("DELETE", `${base}?path=${enc(path)}`)).then(() => load(dir)), { kind: "danger", action: "delete" });
          return h("tr", { dataset: { name: entry.name } }, h("td", { class: "id" }, name), h("td", {}, entry.type),
            h("td", {}, isDir ? "" : bytes(entry.size)), h("td", {}, entry.mode),
            h("td", {}, new Date(entry.modified_at * 1000).toLocaleString()), h("td", {}, get, " ", remove));
        });
      body.replaceChildren(table(["Name", "Type", "Size", "Mode", "Modified", ""], rows, "Empty directory."));
    } catch (e) {
      line.textContent = e.message;
    }
  }

  async function send() {
    for (const file of picker.files) {
      progress.hidden = false;
      progress.value = 0;
      line.textContent = `Uploading ${file.name}…`;
      try {
        await upload(`${base}?path=${enc(join(dir, file.name))}`, file, (p) => { progress.value = p; });
        progress.value = 1;
      } catch (e) {
        line.textContent = e.message;
        return;
      }
    }
    picker.value = "";
    progress.hidden = true;
    await load(dir);
  }

  picker.addEventListener("change", send);
  pane.append(h("form", { onsubmit: (e) => { e.preventDefault(); load(where.value); } },
    h("label", { class: "wide" }, "Directory", where), h("button", { type: "submit" }, "Open"),
    button("Up", () => load(parent(dir)), { kind: "secondary" }),
    h("label", {}, "Upload", picker), progress), line, body);
  load(dir);
  return null;
}
