//! The audit log: an entry as every backend writes it.

use uuid::Uuid;

use crate::model::Actor;

/// One mutation to record.
#[derive(Debug)]
pub struct NewActivity<'a> {
    /// The company whose log gets the entry.
    pub company_id: Uuid,
    /// Who did it.
    pub actor: Actor,
    /// What was done, `<entity>.<verb>`.
    pub action: &'a str,
    /// The kind of thing it was done to.
    pub entity_type: &'a str,
    /// The thing it was done to.
    pub entity_id: Uuid,
    /// Details of the change (never a secret).
    pub details: serde_json::Value,
}
