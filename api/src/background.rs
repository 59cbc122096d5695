//! Background threads yield the CPU to the request path.
//!
//! The history store thread (SQLite) works in bursts of a few milliseconds: one commit
//! carries up to a hundred milliseconds of orders. At the same priority as the threads a
//! request waits for (the tokio workers, the engine, the journal writer, the output thread),
//! the kernel lets such a burst run on while a woken request thread queues behind it on
//! the same CPU, even with the other CPU idle: a scheduler trace of the create-order
//! benchmark showed the journal writer runnable but waiting 2.3 ms behind the store
//! thread. At nice 19 a woken thread preempts it at once. The store thread still gets
//! every idle moment and a share of a busy CPU (a nice-19 thread weighs 15 against 1024), so
//! it cannot starve, and when its queue fills the output thread waits for it as before.
//!
//! Measured with `bourse bench http --clients 128` (README, "Performance"), in alternated
//! runs: the create p99 fell from 8.4-9.8 ms to 7.1-8.6 ms; throughput moved within the
//! machine's noise (one series of three pairs favoured nice 19 by ~10 %, the next the
//! old binary by ~4 %).

/// The niceness background threads run at (the lowest priority of the normal class).
pub const BACKGROUND_NICE: i32 = 19;

/// Lowers the calling thread to [`BACKGROUND_NICE`]. Best effort: where the call is not
/// available or refused, the thread keeps its priority.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, niceness is per thread: PRIO_PROCESS with who = 0 is the calling thread.
        #[allow(unsafe_code)]
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the background thread's priority"
            );
        }
    }
}
