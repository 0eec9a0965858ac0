//! A task handle that aborts its task when dropped. Leaf module: no crate imports.

/// A task that is aborted when its handle is dropped.
pub struct AbortOnDrop<T = ()>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
