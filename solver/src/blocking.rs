//! Blocking work (hashing, copying, tar) run off the async threads.

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("worker failed: {e}")),
    }
}
