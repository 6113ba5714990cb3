//! sea-orm entities for the tables crmsyncd keeps: synced records, the change counter that orders them, pull
//! cursors, the webhook inbox, the write outbox and sealed OAuth credentials. One table per module; the schema itself lives in the
//! `crmsyncd-migration` crate, and these structs mirror it column for column.

pub mod prelude;

pub mod change_counter;
pub mod credentials;
pub mod cursors;
pub mod outbox;
pub mod records;
pub mod webhook_events;
