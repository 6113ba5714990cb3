//! The entities under short names, as sea-orm-cli generates them.

pub use super::change_counter::Entity as ChangeCounter;
pub use super::credentials::Entity as Credentials;
pub use super::cursors::Entity as Cursors;
pub use super::outbox::{Entity as Outbox, OutboxStatus};
pub use super::records::Entity as Records;
pub use super::webhook_events::{Entity as WebhookEvents, WebhookStatus};
