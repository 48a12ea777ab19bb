//! Tests whose assertions rest on a measurement (a link probe, a pause)
//! run alone within their test binary: the others in it take
//! [`shared`], the measuring one [`alone`], so on two cores a neighbour's
//! import can't pass for the link's round trip or window. (A tokio lock:
//! each `#[tokio::test]` has a runtime of its own, and the guards are held
//! across awaits.)

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static MEASURING: RwLock<()> = RwLock::const_new(());

/// Held by a test that may run beside others, but not beside a measuring one.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    MEASURING.read().await
}

/// Held by a test that measures: it waits for the running ones to end and
/// keeps the others waiting until it is done.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    MEASURING.write().await
}
