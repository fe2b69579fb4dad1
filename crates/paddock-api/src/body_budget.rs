//! Buffered request bodies, server-wide. A JSON body is read whole before
//! its handler runs (a command up to 64 MiB of JSON), so a thousand large
//! requests at once would hold tens of GiB: within each route's limit, and
//! within the account's request rate, and still more than the host has.
//! Every body-carrying request reserves what it announces (its route's
//! limit when it announces nothing) from one budget until its handler has
//! answered; one that does not fit is a 503 with `Retry-After`, at once,
//! before a byte of it is read. File uploads stream and reserve nothing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// The budget, in KiB (a semaphore counts in `u32`-sized permits).
#[derive(Clone)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new(bytes.div_ceil(1024))),
        }
    }

    /// The middleware of routes whose bodies are read whole, up to
    /// `route_limit`: `.layer(budget.on(limit))`.
    pub fn on(&self, route_limit: usize) -> BudgetLayer {
        let admit: AdmitFn = admit_boxed;
        axum::middleware::from_fn_with_state((self.clone(), route_limit), admit)
    }

    /// Reserves what the request announces, or refuses it.
    async fn admit(self, route_limit: usize, request: Request, next: Next) -> Response {
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = match announced {
            Some(n) => n.min(route_limit),
            // A chunked body may grow up to the route's limit.
            None if request.headers().contains_key(header::TRANSFER_ENCODING) => route_limit,
            None => 0,
        };
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if kib == 0 {
            return next.run(request).await;
        }
        let Ok(reserved) = Arc::clone(&self.kib).try_acquire_many_owned(kib) else {
            let mut refused = (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is reading as many request bodies as it holds at once; retry shortly",
            )
                .into_response();
            crate::set_retry_after(&mut refused, std::time::Duration::from_secs(1));
            return refused;
        };
        let response = next.run(request).await;
        drop(reserved);
        response
    }
}

type AdmitFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;
type RouteBudget = (BodyBudget, usize);
type AdmitFn = fn(State<RouteBudget>, Request, Next) -> AdmitFuture;
/// The layer [`BodyBudget::on`] makes.
pub type BudgetLayer =
    axum::middleware::FromFnLayer<AdmitFn, RouteBudget, (State<RouteBudget>, Request)>;

fn admit_boxed(
    State((budget, route_limit)): State<RouteBudget>,
    request: Request,
    next: Next,
) -> AdmitFuture {
    Box::pin(budget.admit(route_limit, request, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_is_counted_in_kib_and_given_back() {
        let budget = BodyBudget::new(10 * 1024);
        let held = Arc::clone(&budget.kib)
            .try_acquire_many_owned(8)
            .expect("fits");
        assert!(Arc::clone(&budget.kib).try_acquire_many_owned(4).is_err());
        drop(held);
        assert!(Arc::clone(&budget.kib).try_acquire_many_owned(10).is_ok());
    }
}
