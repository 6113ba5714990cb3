//! The actor tree: a root supervisor owns one connection actor per configured connection.

mod connection;
pub mod first_poll;
mod supervisor;

pub use connection::{ConnectionActor, ConnectionArgs, ConnectionMsg};
pub use supervisor::{ConnectionStatus, ReloadSummary, Supervisor, SupervisorArgs, SupervisorMsg};
