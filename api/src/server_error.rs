//! Why a server could not start, serve or stop ([`crate::server`]).
//!
//! Each variant says what the operator has to fix and names it (the address, the data dir,
//! the setting, the market), because the binary prints the message and exits: a start-up
//! error is the whole of what an operator sees. Tests match the variant, not the words.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;

/// A server's start, run or stop failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The settings are refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address cannot be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The data dir (or its lock file) cannot be made or opened.
    #[error("data dir {}: {source}", .path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data dir's lock.
    #[error(
        "data dir {} is in use by another bourse process (it holds {}): stop it, or give \
         this one another --data-dir",
        .dir.display(),
        .lock.display()
    )]
    DataDirInUse { dir: PathBuf, lock: PathBuf },
    /// The history store's file cannot be opened (a damaged one is set aside and rebuilt,
    /// not this).
    #[error("history store {}: {source}", .path.display())]
    HistoryStore {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The history store (SQLite) failed.
    #[error("history store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The market data store failed.
    #[error(transparent)]
    Feed(#[from] feed::FeedError),
    /// The pipeline (journal, snapshots, recovery) failed.
    #[error("pipeline: {0}")]
    Pipeline(#[from] engine::pipeline::PipelineError),
    /// The engine took no command at start.
    #[error("the engine at start: {0}")]
    Submit(#[from] engine::pipeline::SubmitError),
    /// A market of the settings is one the engine refuses; nothing of the settings'
    /// markets was created.
    #[error("{what}: {reason} (nothing was created)")]
    MarketRefused { what: String, reason: String },
    /// A command the start journals (markets, settings, the admin) was refused or failed.
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
    /// A task of the server's panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}
