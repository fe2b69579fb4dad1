// The account gateway's dev environments (create, connect and disconnect
// with their progress, delete) and batch jobs (submit, logs, cancel,
// delete), under /v1/accounts/{account}/.

import { act, age, button, field, h, listPage, parsePairs, table } from "./dom.js";
import { api, enc, session } from "./api.js";

const base = () => `/v1/accounts/${enc(session.me.account_id)}`;
const shortName = (name) => name.split("/").pop();
// States on the way somewhere: the page polls faster while one shows.
const POLL = { every: 3000, busyEvery: 700 };
const MOVING = ["CREATING", "CONNECTING", "DISCONNECTING", "RECONNECTING", "DELETING", "QUEUED", "PENDING", "RUNNING", "CANCELLING"];

// Every item of a gateway list, following its `nextPageToken`.
async function listAll(collection) {
  const items = [];
  let token = "";
  do {
    const page = await api("GET", `${base()}/${collection}?pageSize=100${token ? `&pageToken=${enc(token)}` : ""}`);
    items.push(...(page[collection] || []));
    token = page.nextPageToken;
  } while (token);
  return items;
}

async function poolOptions(select) {
  const nodePools = await listAll("nodePools");
  select.replaceChildren(...nodePools.map((p) => h("option", { value: shortName(p.name) }, p.displayName || shortName(p.name))));
}

export function environments(view) {
  function form(line, redraw) {
    const id = h("input", { id: "env-id", required: true, placeholder: "dev" });
    const image = h("input", { id: "env-image", required: true, placeholder: "registry/name:tag" });
    const add = h("button", { type: "submit" }, "Create environment");
    return h("form", { onsubmit: (e) => {
      e.preventDefault();
      const environment = { displayName: id.value.trim(), baseImageRef: image.value.trim() };
      act(add, line, () => api("POST", `${base()}/environments`, { environmentId: id.value.trim(), environment })).then(redraw);
    } }, field("Id", id), field("Base image", image, true), add);
  }
  return listPage(view, "Environments", form, async (line, redraw) => {
    const all = await listAll("environments");
    const rows = all.map((env) => {
      const id = shortName(env.name);
      const path = `${base()}/environments/${enc(id)}`;
      const pool = h("select", { class: "pool" });
      poolOptions(pool).catch(() => {});
      const ranks = h("input", { type: "number", min: "1", value: "1", class: "ranks" });
      const connect = button("Connect", () => act(connect, line, () => api("POST", `${path}:connect`,
        { connection: { nodePoolId: pool.value, numRanks: Number(ranks.value) } }), "Connecting…").then(redraw), { action: "connect" });
      const disconnect = button("Disconnect", () => act(disconnect, line,
        () => api("POST", `${path}:disconnect`, {}), "Disconnecting…").then(redraw), { kind: "secondary", action: "disconnect" });
      const remove = button("Delete", () => act(remove, line, () => api("DELETE", path)).then(redraw), { kind: "danger", action: "delete" });
      const moving = MOVING.includes(env.state);
      const state = h("td", { class: `state-${env.state}` }, env.state, moving ? h("span", { class: "spinner" }) : "");
      return h("tr", { dataset: { environment: id, state: env.state } }, h("td", {}, env.displayName || id), state,
        h("td", {}, env.connection ? `${env.connection.nodePoolId || ""} ×${env.connection.numRanks || 1}` : ""),
        h("td", { class: "id" }, env.vmId ? h("a", { href: `#/vms/${enc(env.vmId)}` }, env.vmId) : ""),
        h("td", {}, age(env.createTime)),
        h("td", {}, env.state === "DISCONNECTED" ? [pool, " ", ranks, " ", connect, " "] : "",
          env.state === "CONNECTED" ? [disconnect, " "] : "", remove));
    });
    return { content: table(["Environment", "State", "Connection", "VM", "Age", ""], rows, "No environments yet."),
      busy: all.some((e) => MOVING.includes(e.state)) };
  }, POLL);
}

export function jobs(view) {
  const logs = h("pre", { id: "job-logs", hidden: true });
  async function showLogs(id) {
    const entries = [];
    let token = "";
    do {
      const answer = await api("GET", `${base()}/batchJobs/${enc(id)}:getLogs${token ? `?pageToken=${enc(token)}` : ""}`);
      entries.push(...answer.entries);
      token = answer.nextPageToken;
    } while (token);
    logs.hidden = false;
    logs.replaceChildren(...entries.map((e) => h("span", { class: e.stream === "stderr" ? "stderr" : e.stream === "system" ? "exit" : undefined }, e.text)));
  }
  function form(line, redraw) {
    const id = h("input", { id: "job-id", placeholder: "generated when empty" });
    const pool = h("select", { id: "job-pool" });
    poolOptions(pool).catch(() => {});
    const command = h("input", { id: "job-command", required: true, placeholder: "echo hello" });
    // A job runs an image, or an environment's saved image.
    const image = h("input", { id: "job-image", placeholder: "registry/name:tag" });
    const environment = h("select", { id: "job-environment" }, h("option", { value: "" }, "none: the image"));
    listAll("environments").then((all) => {
      for (const env of all) environment.append(h("option", { value: shortName(env.name) }, env.displayName || shortName(env.name)));
    }).catch(() => {});
    const env = h("textarea", { id: "job-env", rows: "1", placeholder: "NAME=value" });
    const add = h("button", { type: "submit" }, "Submit job");
    return h("div", {}, h("form", { onsubmit: (e) => {
      e.preventDefault();
      act(add, line, () => {
        const body = { displayName: id.value.trim() || undefined, nodePoolId: pool.value, shellExecutor: { command: command.value } };
        if (env.value.trim()) body.envVars = parsePairs(env.value, "env");
        if (environment.value) body.environmentId = environment.value;
        else body.imageRef = image.value.trim();
        const query = id.value.trim() ? `?batchJobId=${enc(id.value.trim())}` : "";
        return api("POST", `${base()}/batchJobs${query}`, body);
      }, "Submitting…").then(redraw);
    } }, field("Id", id), field("Node pool", pool), field("Image", image), field("or environment", environment),
    field("Command", command, true), field("Env", env), add), logs);
  }
  return listPage(view, "Batch jobs", form, async (line, redraw) => {
    const batchJobs = await listAll("batchJobs");
    const rows = batchJobs.map((job) => {
      const id = shortName(job.name);
      const path = `${base()}/batchJobs/${enc(id)}`;
      const show = button("Logs", () => act(show, line, () => showLogs(id)), { kind: "secondary", action: "logs" });
      const cancel = MOVING.includes(job.state) && job.state !== "CANCELLING" && button("Cancel", () => act(cancel, line,
        () => api("POST", `${path}:cancel`, {})).then(redraw), { kind: "secondary" });
      const remove = button("Delete", () => act(remove, line, () => api("DELETE", path)).then(redraw), { kind: "danger" });
      return h("tr", { dataset: { job: id, state: job.state } }, h("td", {}, job.displayName || id),
        h("td", { class: `state-${job.state}` }, job.state, job.status && job.status.message ? ` (${job.status.message})` : ""),
        h("td", {}, shortName(job.nodePoolId || "")), h("td", {}, age(job.createTime)), h("td", {}, show, " ", cancel, " ", remove));
    });
    return { content: table(["Job", "State", "Node pool", "Age", ""], rows, "No batch jobs yet."),
      busy: batchJobs.some((j) => MOVING.includes(j.state)) };
  }, POLL);
}
