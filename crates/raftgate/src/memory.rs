//! Gives the memory that configuration changes free back to the operating system.
//!
//! Writing a large configuration (10,000 routes) recompiles the router and the policy index
//! many times and builds snapshots; the old copies are freed, but the allocator (jemalloc, see
//! `main.rs`) keeps freed pages as dirty pages and returns them only gradually, as it keeps
//! allocating, so an idle node's resident memory stays near the peak of the burst. Once a
//! burst of changes to the configuration tables has settled, every arena is purged. It runs off
//! the request path, at most once per quiet period, and never for the rate-limit and usage
//! counters that change every sync interval.

use std::sync::Arc;
use std::time::Duration;

use raftgate_model::State;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the configuration must stay unchanged before the trim.
const SETTLE: Duration = Duration::from_secs(2);

/// The configuration tables whose rewrites allocate: routes, services, consumers, keys.
fn tables(s: &State) -> [usize; 4] {
    [
        Arc::as_ptr(&s.routes) as usize,
        Arc::as_ptr(&s.services) as usize,
        Arc::as_ptr(&s.consumers) as usize,
        Arc::as_ptr(&s.keys) as usize,
    ]
}

/// Trims the allocator's free memory after each burst of configuration changes, until the
/// state stops being published.
pub async fn trim_after_changes(states: watch::Receiver<Arc<State>>) {
    after_each_burst(states, || async {
        if let Ok(Err(status)) = tokio::task::spawn_blocking(trim).await {
            tracing::debug!(status, "purging the allocator's free pages failed");
        }
    })
    .await;
}

/// Calls `then` once after each burst of configuration changes.
async fn after_each_burst<F, Fut>(mut states: watch::Receiver<Arc<State>>, mut then: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = tables(&states.borrow_and_update());
    loop {
        // A change to the configuration starts a burst...
        loop {
            if states.changed().await.is_err() {
                return;
            }
            let now = tables(&states.borrow_and_update());
            if now != seen {
                seen = now;
                break;
            }
        }
        // ...which ends when the configuration stays unchanged for `SETTLE` (other changes,
        // such as usage counters, do not extend it).
        let mut deadline = Instant::now() + SETTLE;
        loop {
            match tokio::time::timeout_at(deadline, states.changed()).await {
                Err(_) => break,
                Ok(Err(_)) => return,
                Ok(Ok(())) => {
                    let now = tables(&states.borrow_and_update());
                    if now != seen {
                        seen = now;
                        deadline = Instant::now() + SETTLE;
                    }
                }
            }
        }
        then().await;
    }
}

/// The `mallctl` name that purges the unused dirty pages of every arena
/// (`MALLCTL_ARENAS_ALL` is 4096).
const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";

/// Purges every arena; on failure, jemalloc's error number.
fn trim() -> Result<(), i32> {
    // SAFETY: `arena.<i>.purge` reads and writes nothing: every pointer is null and the length
    // zero, as jemalloc's manual specifies for this control; the name is NUL-terminated.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status == 0 { Ok(()) } else { Err(status) }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use raftgate_model::{Entity, RouteSpec};

    use super::*;

    fn with_route(s: &State, name: &str) -> Arc<State> {
        let mut routes = (*s.routes).clone();
        routes.insert(
            name.into(),
            Entity {
                name: name.into(),
                spec: RouteSpec::default(),
                version: 1,
                created_at: 0,
                updated_at: 0,
            },
        );
        Arc::new(State {
            routes: Arc::new(routes),
            ..s.clone()
        })
    }

    #[test]
    fn the_purge_control_exists() {
        assert_eq!(trim(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn trims_once_after_a_burst_of_configuration_changes_only() {
        let (tx, rx) = watch::channel(Arc::new(State::default()));
        let trims = Arc::new(AtomicUsize::new(0));
        let counted = trims.clone();
        tokio::spawn(after_each_burst(rx, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        // A burst of 20 route writes, 100 ms apart: one trim, 2 s after the last.
        for i in 0..20 {
            let next = with_route(&tx.borrow(), &format!("r{i}"));
            tx.send_replace(next);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(trims.load(Ordering::SeqCst), 0, "not during the burst");
        tokio::time::sleep(SETTLE).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1, "once after it");
        // Counter updates (a new applied index, same tables) never trim.
        for i in 0..20 {
            let next = Arc::new(State {
                applied_index: i,
                ..(**tx.borrow()).clone()
            });
            tx.send_replace(next);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1);
    }
}
