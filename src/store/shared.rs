//! The store shared by async tasks: one connection behind a mutex, each
//! call on tokio's blocking pool so SQLite's fsyncs never stall the runtime.

use std::sync::{Arc, Mutex};

use super::Store;

#[derive(Debug, Clone)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    /// The file's path, for messages.
    pub fn path_shown(&self) -> String {
        let store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        store.path().display().to_string()
    }

    /// Runs `f` with the store on the blocking pool. Calls are serialised;
    /// each is short (one transaction at most).
    pub async fn call<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        let task = tokio::task::spawn_blocking(move || {
            // A panic inside a store call is a bug; the connection itself
            // is still consistent (SQLite rolled back), so carry on.
            let mut store = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store)
        });
        match task.await {
            Ok(result) => result,
            // Blocking tasks are never cancelled, so this is a panic in `f`:
            // pass it on where it belongs.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
