"""How long the dashboard takes to load with many VMs listed (a bench,
not a test): a server with N live VMs (default 200), and a real headless
Chromium that loads the VM list and a VM's page again and again, timed
by the page's own marks from the navigation's start to the list drawn
with every VM (`paddock:vms-listed`) and to a VM's details shown
(`paddock:vm-shown`). Beside them, in the same run: the list's two API
calls made straight from Python (the API's share of the time), and the
signed-out page up to DOMContentLoaded (the page's fixed cost).

    PADDOCK_BIN=target/release/paddock target/sdk-venv/bin/python tests/sdk/bench_dashboard.py --vms 200 --loads 30
"""

import argparse
import statistics
import sys
import time

import requests

from chromium import Chromium
from conftest import Server


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name, samples):
    print(f"| {name:<58} | {statistics.median(samples):8.1f} | {percentile(samples, 0.99):8.1f} | {len(samples):3} |")


def load(chrome, url, mark, expression):
    chrome.call("Page.navigate", url=url)
    deadline = time.time() + 60
    while True:
        value = chrome.evaluate(
            f"(() => {{ const m = performance.getEntriesByName('{mark}')[0];"
            f" return m && ({expression}) ? m.startTime : null; }})()"
        )
        if value is not None:
            return value
        if time.time() > deadline:
            sys.exit(f"{mark} never came: {chrome.evaluate('document.body.innerText')[:500]}")
        time.sleep(0.02)


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--vms", type=int, default=200)
    args.add_argument("--loads", type=int, default=30)
    opts = args.parse_args()

    server = Server(extra_env={"PADDOCK_NETWORK__BRIDGE": "psdkb", "PADDOCK_NETWORK__SUBNET": "10.63.8.0/22"})
    chrome = Chromium()
    try:
        headers = {"X-API-Key": server.key}
        started = time.time()
        vms = []
        for _ in range(opts.vms):
            r = requests.post(f"{server.base_url}/v1/vms?wait=true", headers=headers, json={"memory_mb": 128}, timeout=120)
            r.raise_for_status()
            vms.append(r.json()["vm_id"])
        print(f"{len(vms)} VMs running ({time.time() - started:.1f} s to make)\n")

        api = []
        for _ in range(opts.loads):
            t = time.perf_counter()
            listed = requests.get(f"{server.base_url}/v1/vms?limit=1000", headers=headers, timeout=30)
            requests.get(f"{server.base_url}/v1/shares", headers=headers, timeout=30)
            api.append((time.perf_counter() - t) * 1000)
            assert len([v for v in listed.json() if v["status"] == "active"]) >= opts.vms

        chrome.call("Page.enable")
        blank = []
        for _ in range(opts.loads):
            chrome.call("Page.navigate", url=f"{server.base_url}/ui/?blank")
            while not chrome.evaluate("document.readyState === 'complete'"):
                time.sleep(0.01)
            blank.append(chrome.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
        # Signed in from here on: the key in this tab's session storage.
        chrome.evaluate(f"sessionStorage.setItem('paddock.key', '{server.key}'); true")

        listing, page = [], []
        for i in range(opts.loads):
            listing.append(load(chrome, f"{server.base_url}/ui/?{i}#/vms", "paddock:vms-listed",
                                f"document.querySelectorAll('#vms tr').length >= {opts.vms}"))
            page.append(load(chrome, f"{server.base_url}/ui/?{i}#/vms/{vms[i % len(vms)]}", "paddock:vm-shown", "true"))

        print(f"| {'measurement (ms from navigation start)':<58} | {'p50':>8} | {'p99':>8} | {'n':>3} |")
        print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|{'-' * 5}|")
        row("baseline: the list's API calls alone (Python, no browser)", api)
        row("baseline: the signed-out page, DOMContentLoaded", blank)
        row(f"VM list drawn with all {opts.vms} VMs", listing)
        row(f"a VM's page shown, {opts.vms} VMs live", page)
    finally:
        chrome.close()
        server.stop()


if __name__ == "__main__":
    main()
