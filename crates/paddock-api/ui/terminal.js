// A terminal in the VM: xterm.js over the PTY WebSocket. The key rides
// in the subprotocol list (never the URL); resizes follow the pane;
// Ctrl+Shift+C copies the selection and Ctrl+Shift+V pastes; a dropped
// connection reattaches to the same PTY session while it lives.

import { button, h, statusLine } from "./dom.js";
import { api, enc, key } from "./api.js";

const RETRIES = 5;

// xterm.js's DOM renderer writes its theme (colours, cursor, selection)
// into <style> elements, which this page's policy refuses (no inline
// styles). The same rules in constructed style sheets are allowed: each
// such element under `root` is mirrored into one, kept in step with its
// text, and dropped with it.
function adoptInlineStyles(root) {
  const sheets = new Map();
  const sync = () => {
    for (const [el, entry] of sheets) {
      if (!el.isConnected) {
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== entry.sheet);
        sheets.delete(el);
      }
    }
    for (const el of root.querySelectorAll("style")) {
      let entry = sheets.get(el);
      if (!entry) {
        entry = { sheet: new CSSStyleSheet(), text: null };
        sheets.set(el, entry);
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, entry.sheet];
      }
      if (entry.text !== el.textContent) {
        entry.text = el.textContent;
        entry.sheet.replaceSync(entry.text);
      }
    }
  };
  const observer = new MutationObserver(sync);
  observer.observe(root, { childList: true, subtree: true, characterData: true });
  return () => {
    observer.disconnect();
    const mine = new Set([...sheets.values()].map((e) => e.sheet));
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !mine.has(s));
  };
}

export function terminal(pane, vm) {
  const line = statusLine();
  line.id = "terminal-status";
  const screen = h("div", { id: "terminal", class: "terminal" });
  const reconnect = button("Reconnect", () => { tries = 0; attach(); }, { kind: "secondary", action: "reconnect" });
  reconnect.hidden = true;
  pane.append(h("div", { class: "actions" }, reconnect), line, screen);
  if (!window.Terminal) {
    line.textContent = window.paddockTerminalMissing || "xterm.js did not load.";
    return null;
  }

  const dropStyles = adoptInlineStyles(screen);
  const term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, convertEol: false });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();

  // The VM's shell outlives the page: leaving the tab or reloading
  // reattaches to it while it runs.
  const remembered = `paddock.pty.${vm.vm_id}`;
  let pty = sessionStorage.getItem(remembered);
  let socket = null;
  let stopped = false;
  let tries = 0;
  const encoder = new TextEncoder();

  const send = (data) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  };
  const sendSize = () => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
    }
  };

  term.onData(send);
  term.onResize(sendSize);
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey) return true;
    if (e.code === "KeyC" && term.hasSelection()) {
      navigator.clipboard.writeText(term.getSelection()).catch(() => {});
      return false;
    }
    if (e.code === "KeyV") {
      navigator.clipboard.readText().then((t) => term.paste(t)).catch(() => {});
      return false;
    }
    return true;
  });
  const resized = new ResizeObserver(() => { try { fit.fit(); } catch { /* hidden */ } });
  resized.observe(screen);

  async function attach() {
    reconnect.hidden = true;
    line.textContent = "Connecting…";
    try {
      // The same session after a drop, while it still runs.
      if (pty) await api("GET", `/v1/vms/${enc(vm.vm_id)}/pty/sessions/${enc(pty)}`).catch(() => { pty = null; });
      if (!pty) sessionStorage.removeItem(remembered);
      if (!pty) {
        const made = await api("POST", `/v1/vms/${enc(vm.vm_id)}/pty/sessions`, { cols: term.cols, rows: term.rows });
        pty = made.session_id;
        sessionStorage.setItem(remembered, pty);
      }
    } catch (e) {
      line.textContent = e.message;
      reconnect.hidden = false;
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/vms/${enc(vm.vm_id)}/pty/${enc(pty)}/connect`;
    socket = new WebSocket(url, ["paddock.v1", `paddock.key.${key()}`]);
    socket.binaryType = "arraybuffer";
    screen.dataset.pty = pty;
    socket.onopen = () => {
      tries = 0;
      line.textContent = "";
      screen.dataset.connected = "true";
      sendSize();
      term.focus();
    };
    socket.onmessage = (m) => {
      if (typeof m.data === "string") {
        let event = null;
        try { event = JSON.parse(m.data); } catch { term.write(m.data); return; }
        if (event && event.type === "exit") {
          term.write(`\r\n[exited ${event.exit_code}]\r\n`);
          pty = null;
          sessionStorage.removeItem(remembered);
        }
        return;
      }
      term.write(new Uint8Array(m.data));
    };
    socket.onclose = () => {
      screen.dataset.connected = "false";
      if (stopped) return;
      if (pty && tries < RETRIES) {
        tries += 1;
        line.textContent = `Connection lost; reconnecting (${tries})…`;
        setTimeout(attach, 500 * tries);
      } else {
        line.textContent = pty ? "Connection lost." : "The shell ended.";
        reconnect.hidden = false;
      }
    };
  }

  attach();
  return () => {
    stopped = true;
    resized.disconnect();
    if (socket) socket.close();
    term.dispose();
    dropStyles();
  };
}
