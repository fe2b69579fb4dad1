//! Links `paddock-agent` as a position-dependent executable. The agent is
//! PID 1 of every sandbox, thousands at once: as a PIE, the loader
//! relocated its read-only data (vtables, the tables pointing at string
//! constants) at every start, and each sandbox kept its own dirty copy
//! of those pages, 64 KiB. Linked at a fixed address, they are resolved
//! by the linker and shared from the page cache. What the agent guards
//! gains nothing from its own address being random: it runs with the
//! tenant's own privileges, inside the tenant's sandbox.
fn main() {
    println!("cargo::rustc-link-arg-bin=paddock-agent=-no-pie");
}
