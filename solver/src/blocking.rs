//! Blocking work (hashing, copying, tar) run off the async threads.

use crate::error::StepError;

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<T, E, F>(f: F) -> Result<T, StepError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    E: Into<StepError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(StepError::Worker(e)),
    }
}
