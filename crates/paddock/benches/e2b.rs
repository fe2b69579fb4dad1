//! What E2B's SDK costs over paddock's own API: `Sandbox.create()` then
//! the first `commands.run("echo ready")` through the unchanged `e2b` SDK,
//! next to `POST /v1/vms?wait=true` then the first exec through the VM
//! API, interleaved in one Python process against one server (so both
//! pay the same client runtime), then `run_code` in a fresh code
//! interpreter context (a Jupyter kernel's start) and in a warm one.
//!
//! `cargo bench --bench e2b` (root; the SDK suite's virtualenv,
//! `target/sdk-venv`, which `scripts/test.sh` makes).

mod common;

use std::process::Command;
use std::time::Duration;

use common::row;

const ROUNDS: usize = 40;

const DRIVER: &str = r#"
import json, os, sys, time
import httpx
from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox
base, key, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ.update(E2B_API_URL=f"{base}/e2b", E2B_SANDBOX_URL=f"{base}/e2b/sandbox", E2B_API_KEY=key)
vm_api = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60)
out = {"sdk": [], "vm_api": [], "kernel_cold": [], "kernel_warm": []}

def sdk():
    t = time.perf_counter()
    s = Sandbox.create()
    r = s.commands.run("echo ready")
    d = time.perf_counter() - t
    assert r.stdout == "ready\n", r
    s.kill()
    return d

def api():
    t = time.perf_counter()
    vm = vm_api.post("/v1/vms?wait=true", json={}).json()
    r = vm_api.post(f"/v1/vms/{vm['vm_id']}/exec", json={"command": "echo ready"}).text
    d = time.perf_counter() - t
    assert "ready" in r, r
    vm_api.delete(f"/v1/vms/{vm['vm_id']}")
    return d

for _ in range(3):
    sdk(); api()
for _ in range(rounds):
    out["sdk"].append(sdk())
    out["vm_api"].append(api())

c = CodeSandbox.create()
for _ in range(max(3, rounds // 8)):
    t = time.perf_counter()
    ctx = c.create_code_context()
    assert c.run_code("1 + 1", context=ctx).text == "2"
    out["kernel_cold"].append(time.perf_counter() - t)
    c.remove_code_context(ctx)
c.run_code("0")
for _ in range(rounds):
    t = time.perf_counter()
    assert c.run_code("1 + 1").text == "2"
    out["kernel_warm"].append(time.perf_counter() - t)
c.kill()
print(json.dumps(out))
"#;

fn main() {
    let server = common::start_server(None);
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/sdk-venv/bin/python"
    );
    let output = Command::new(python)
        .args(["-c", DRIVER, &server.base, &server.key, &ROUNDS.to_string()])
        .output()
        .expect("run the SDK driver (make target/sdk-venv with scripts/test.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the driver's figures");
    let samples = |name: &str| -> Vec<Duration> {
        figures[name]
            .as_array()
            .expect("samples")
            .iter()
            .filter_map(|v| v.as_f64())
            .map(Duration::from_secs_f64)
            .collect()
    };
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>5} |",
        "ms", "p50", "p99", "n"
    );
    println!("|{:-<54}|{:-<11}|{:-<11}|{:-<7}|", "", "", "", "");
    row(
        "e2b SDK: Sandbox.create() → first commands.run",
        &mut samples("sdk"),
    );
    row(
        "VM API: POST /v1/vms?wait=true → first exec",
        &mut samples("vm_api"),
    );
    row(
        "e2b-code-interpreter: new context → run_code",
        &mut samples("kernel_cold"),
    );
    row(
        "e2b-code-interpreter: run_code, warm kernel",
        &mut samples("kernel_warm"),
    );
}
