//! A minimal shutdown signal for the core's background tasks, so the core
//! needs no extra crate for it: a watch channel that turns true once.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown(pub watch::Receiver<bool>);

impl Shutdown {
    /// Returns once shutdown is signalled (or its sender is gone).
    pub async fn cancelled(&mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}
