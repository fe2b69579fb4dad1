// The dashboard's shell: sign in and out, and a hash router that shows
// one view at a time. Each view is `render(container, ...params)` and
// answers a function that stops what it started (polls, sockets).

import { $ } from "./dom.js";
import { api, forgetKey, keepKey, key, session } from "./api.js";
import * as vms from "./vms.js";
import * as vm from "./vm.js";
import * as resources from "./resources.js";
import * as gateway from "./gateway.js";
import * as definitions from "./definitions.js";

const routes = {
  vms: vms.render,
  vm: vm.render,
  snapshots: resources.snapshots,
  images: resources.images,
  volumes: resources.volumes,
  vaults: resources.vaults,
  keys: resources.keys,
  environments: gateway.environments,
  jobs: gateway.jobs,
  definitions: definitions.render,
};

let stopView = null;

function show(signedIn) {
  $("sign-in-view").hidden = signedIn;
  $("view").hidden = !signedIn;
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) $("who").textContent = "";
}

// `#/vms/<id>` is a VM's page; `#/<name>` a list.
function route() {
  if (!session.me) return;
  if (stopView) stopView();
  stopView = null;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let name = parts[0] || "vms";
  let params = parts.slice(1).filter(Boolean);
  if (name === "vms" && params.length) name = "vm";
  const render = routes[name] || routes.vms;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.dataset.route === (name === "vm" ? "vms" : name));
  }
  const view = $("view");
  view.replaceChildren();
  view.dataset.view = name;
  stopView = render(view, ...params) || null;
}

async function signIn(candidate) {
  keepKey(candidate);
  try {
    session.me = await api("GET", "/v1/users/me");
    $("who").textContent = session.me.email || session.me.account_name || "";
    $("sign-in-error").textContent = "";
    show(true);
    route();
  } catch (e) {
    forgetKey();
    session.me = null;
    $("sign-in-error").textContent = e.status === 401 ? "That key was refused." : e.message;
    show(false);
  }
}

function signOut() {
  if (stopView) stopView();
  stopView = null;
  session.me = null;
  forgetKey();
  $("view").replaceChildren();
  $("key").value = "";
  show(false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  // A key revoked while signed in: back to the sign-in form.
  window.addEventListener("paddock:unauthorized", () => { if (session.me) signOut(); });
  if (key()) signIn(key());
  else show(false);
});
