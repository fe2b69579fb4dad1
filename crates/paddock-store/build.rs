// `sqlx::migrate!` embeds the migration files at compile time, but cargo
// does not know the macro read them: a migration added without a change
// to any source file would leave a stale binary (as sqlx's docs say).
fn main() {
    println!("cargo::rerun-if-changed=migrations");
}
