//! The REST API: axum routes, auth, problem+json errors, the history store and the server.
//!
//! - [`routes::app`] builds the router (tests serve it in-process);
//! - [`server::start`] recovers the engine through the pipeline and prepares the state;
//! - [`listener::HistoryListener`] turns processed batches into the SQLite history store.
//!
//! The API never touches the engine at run time: it submits commands and awaits their
//! outcome, which arrives only once the command is durable and every listener applied it.

pub mod auth;
pub mod bare_answers;
pub mod config;
pub mod connections;
pub mod demo;
pub mod error;
pub mod extract;
pub mod json_out;
pub mod listener;
pub mod metrics;
pub mod middleware;
pub mod model;
pub mod open_counts;
pub mod open_orders;
pub mod rate_limit;
pub mod request_head;
pub mod routes;
pub mod server;
pub mod server_error;
pub mod starting;
pub mod state;
pub mod store;
pub mod store_damage;
pub mod used_keys;
pub mod web;

pub use config::Config;
pub use routes::app;
pub use state::AppState;
