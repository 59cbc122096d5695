//! What code logs through `tracing` while a closure runs, as text: for tests that check a
//! failure is reported in the server's log (and only once), here and in the crates above
//! (`feed`, `api`), which turn on the `test-support` feature in their dev-dependencies so
//! that one helper serves them all.

use std::sync::Arc;

use parking_lot::Mutex;

/// Runs `f` with a `tracing` subscriber of its own (plain text, no colours) and returns
/// everything it logged.
pub fn log_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}
