// Environment definitions (/api/v1/environments): list, view, edit
// (a PUT with the revision read, so a concurrent change is refused, not
// lost), create, launch a sandbox and see a definition's sandboxes.

import { act, age, button, field, h, statusLine, table } from "./dom.js";
import { api, enc, request } from "./api.js";

function editor(def, line, redraw) {
  const { id, revision, ...spec } = def;
  const text = h("textarea", { id: "definition-json", rows: "14", spellcheck: "false" });
  text.value = JSON.stringify(spec, null, 2);
  const save = h("button", { type: "submit" }, "Save");
  const command = h("input", { id: "launch-command", placeholder: "command (the image's when empty)" });
  const launch = button("Launch sandbox", () => act(launch, line, async () => {
    const body = {};
    if (command.value.trim()) body.command = command.value;
    const sandbox = await api("POST", `/api/v1/environments/${enc(id)}/sandboxes`, body);
    line.textContent = `Launched ${sandbox.id}: ${sandbox.state}`;
    line.classList.add("ok");
    redraw();
  }, "Launching…"), { action: "launch" });
  const sandboxes = h("div");
  api("GET", `/api/v1/environments/${enc(id)}/sandboxes`).then((page) => {
    sandboxes.replaceChildren(table(["Sandbox", "State", "Revision", "Age"], page.data.map((s) => h("tr", {},
      h("td", { class: "id" }, s.id), h("td", {}, s.state + (s.state_reason ? ` (${s.state_reason})` : "")),
      h("td", { class: "id" }, (s.environment_revision || "").slice(0, 12)), h("td", {}, age(s.created_at)))), "No sandboxes."));
  }).catch((e) => { line.textContent = e.message; });
  return h("div", { class: "card", dataset: { definition: id } },
    h("h3", {}, id, " ", h("span", { class: "id" }, `revision ${revision.slice(0, 12)}`)),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      await act(save, line, async () => {
        let body;
        try { body = JSON.parse(text.value); } catch (err) { throw new Error(`not JSON: ${err.message}`); }
        await request("PUT", `/api/v1/environments/${enc(id)}`, { body, headers: { "If-Match": `"${revision}"` } });
        line.textContent = "Saved.";
        line.classList.add("ok");
      }, "Saving…");
      redraw();
    } }, h("label", { class: "wide" }, "Settings (JSON)", text), save),
    h("div", { class: "actions" }, field("Command", command, true), launch), sandboxes);
}

export function render(view) {
  const line = statusLine();
  const body = h("div", { class: "listing" });
  const detail = h("div", { id: "definition" });
  let selected = null;

  async function redraw() {
    try {
      // Every definition, a page of 100 at a time.
      const all = [];
      for (let offset = 0; ; offset += 100) {
        const page = await api("GET", `/api/v1/environments?limit=100&offset=${offset}`);
        all.push(...page.data);
        if (!page.meta.has_more) break;
      }
      body.replaceChildren(table(["Definition", "Provider", "Image", "Revision", ""], all.map((d) => {
        const open = button("Open", () => { selected = d.id; redraw(); }, { kind: "secondary", action: "open" });
        const remove = button("Delete", () => act(remove, line, () => request("DELETE",
          `/api/v1/environments/${enc(d.id)}`, { headers: { "If-Match": `"${d.revision}"` } })).then(() => {
          if (selected === d.id) selected = null;
          redraw();
        }), { kind: "danger" });
        return h("tr", { dataset: { definition: d.id } }, h("td", {}, d.id), h("td", {}, d.provider || ""),
          h("td", {}, (d.image && (d.image.docker || (d.image.dockerfile ? "Dockerfile" : ""))) || "default"), h("td", { class: "id" }, d.revision.slice(0, 12)), h("td", {}, open, " ", remove));
      }), "No definitions yet."));
      const chosen = all.find((d) => d.id === selected);
      detail.replaceChildren(chosen ? editor(chosen, line, redraw) : "");
    } catch (e) { line.textContent = e.message; }
  }

  const id = h("input", { id: "definition-id", required: true, placeholder: "web" });
  const provider = h("select", { id: "definition-provider" },
    ...["container", "local", "docker"].map((p) => h("option", { value: p }, p)));
  const image = h("input", { id: "definition-image", placeholder: "docker image (the default when empty)" });
  const add = h("button", { type: "submit" }, "Create definition");
  const form = h("form", { onsubmit: (e) => {
    e.preventDefault();
    // Every setting the API requires, with the plainest values; edit
    // the rest on the definition's page.
    const body = {
      id: id.value.trim(), provider: provider.value,
      image: { docker: image.value.trim() || null, dockerfile: null },
      resources: { cpu: 1, memory: "256Mi", disk: null },
      network: { mode: "block", allow: [] },
      lifecycle: { preserve: false, stop_on_terminal: false, auto_stop: null },
      labels: {}, volumes: [], env: {},
    };
    act(add, line, () => api("POST", "/api/v1/environments", body)).then((d) => { if (d) selected = d.id; redraw(); });
  } }, field("Id", id), field("Provider", provider), field("Image", image, true), add);

  view.append(h("h2", {}, "Definitions"), form, line, body, detail);
  redraw();
  return null;
}
