//! Why the product refuses an operation, as one type: every refusal a backend or a role can
//! meet is a variant, with the error code the API answers with ([`Refusal::code`]) and whether
//! it is a conflict with the current state or a request that cannot be processed
//! ([`Refusal::kind`]). The lifecycle rules that refuse live here too, so both backends ask the
//! same question and get the same answer.

use crate::model::{AgentStatus, RoutineStatus};

/// The most triggers one routine may have (the contract's cap).
pub const MAX_TRIGGERS_PER_ROUTINE: i64 = 50;

/// The most fires one backfill may cover.
pub const MAX_BACKFILL_FIRES: usize = 1000;

/// What was attempted on an archived routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutineAttempt {
    /// Changing the routine itself.
    Change,
    /// Running it (a manual or api run).
    Run,
    /// Adding or changing one of its triggers.
    ChangeTriggers,
}

/// What was attempted on a terminated agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAttempt {
    /// Changing the agent.
    Change,
    /// Issuing it a new API key.
    IssueKey,
}

/// How a refusal is answered: the state forbids it now, or the request can never succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 409: conflicts with the current state.
    Conflict,
    /// 422: well-formed but refused as it is.
    Unprocessable,
}

/// An operation the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The routine is archived, which is terminal.
    #[error("{}", archived_message(*.attempt))]
    RoutineArchived {
        /// What was attempted.
        attempt: RoutineAttempt,
    },
    /// The agent is terminated, which is terminal.
    #[error("{}", terminated_message(*.attempt))]
    AgentTerminated {
        /// What was attempted.
        attempt: AgentAttempt,
    },
    /// Work was assigned to a terminated agent.
    #[error("the assignee agent is terminated and cannot be assigned work")]
    AgentNotAssignable,
    /// A manual run named a disabled api trigger.
    #[error("the api trigger is disabled")]
    TriggerDisabled,
    /// A webhook call reached a disabled trigger or a routine that is paused or archived.
    #[error("the trigger is disabled or its routine is paused or archived")]
    NotActive,
    /// A secret was asked of a trigger that is not a webhook.
    #[error("only webhook triggers have a secret")]
    NotAWebhookTrigger,
    /// A heartbeat run was claimed that is not queued.
    #[error("the heartbeat run is not queued")]
    HeartbeatNotQueued,
    /// A heartbeat run was finished that is not running.
    #[error("the heartbeat run is not running")]
    HeartbeatNotRunning,
    /// A webhook call was accepted with an outdated read of its trigger (its secret was
    /// rotated, or its signing mode or replay window changed, since it was read): read the
    /// trigger again and retry.
    #[error("the webhook trigger changed while the call was accepted; send the call again")]
    TriggerChanged,
    /// A signed webhook call whose signature was already accepted.
    #[error("this signature was already accepted; sign a new request")]
    Replayed,
    /// A scheduler leader was deposed: a newer epoch has written.
    #[error("deposed: a newer scheduler epoch ({current}) has written")]
    Deposed {
        /// The epoch in the database.
        current: i64,
    },
    /// An idempotency key came back with another payload.
    #[error("this idempotency key was already used with a different payload")]
    IdempotencyKeyReused,
    /// A routine already has [`MAX_TRIGGERS_PER_ROUTINE`] triggers.
    #[error("a routine has at most {MAX_TRIGGERS_PER_ROUTINE} triggers")]
    TooManyTriggers,
    /// A backfill range holds more fires than one backfill may cover.
    #[error("the range holds more than {MAX_BACKFILL_FIRES} fires; backfill it in smaller ranges")]
    BackfillTooLarge,
    /// A webhook secret was rotated while the one it replaced last time is still valid.
    #[error(
        "the previous secret is still in its grace period; wait until it expires or rotate with force to end it now"
    )]
    RotationInProgress,
}

fn archived_message(attempt: RoutineAttempt) -> &'static str {
    match attempt {
        RoutineAttempt::Change => "the routine is archived; an archived routine cannot be changed",
        RoutineAttempt::Run => "the routine is archived; it cannot run",
        RoutineAttempt::ChangeTriggers => "the routine is archived; its triggers cannot be changed",
    }
}

fn terminated_message(attempt: AgentAttempt) -> &'static str {
    match attempt {
        AgentAttempt::Change => "the agent is terminated; a terminated agent cannot be changed",
        AgentAttempt::IssueKey => "the agent is terminated; it cannot get new keys",
    }
}

impl Refusal {
    /// The machine-readable code of the error body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::RoutineArchived { .. } => "routine_archived",
            Self::AgentTerminated { .. } => "agent_terminated",
            Self::AgentNotAssignable => "agent_not_assignable",
            Self::TriggerDisabled => "trigger_disabled",
            Self::NotActive => "not_active",
            Self::NotAWebhookTrigger => "not_a_webhook_trigger",
            Self::HeartbeatNotQueued => "not_queued",
            Self::HeartbeatNotRunning => "not_running",
            Self::TriggerChanged => "trigger_changed",
            Self::Replayed => "replayed",
            Self::Deposed { .. } => "deposed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::TooManyTriggers => "too_many_triggers",
            Self::BackfillTooLarge => "backfill_too_large",
            Self::RotationInProgress => "rotation_in_progress",
        }
    }

    /// Whether it conflicts with the current state or cannot be processed as sent.
    #[must_use]
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::IdempotencyKeyReused | Self::TooManyTriggers | Self::BackfillTooLarge => {
                RefusalKind::Unprocessable
            }
            _ => RefusalKind::Conflict,
        }
    }
}

/// A routine in `status` allows `attempt` (everything but archived does).
///
/// # Errors
/// [`Refusal::RoutineArchived`].
pub fn routine_allows(status: RoutineStatus, attempt: RoutineAttempt) -> Result<(), Refusal> {
    if status == RoutineStatus::Archived {
        return Err(Refusal::RoutineArchived { attempt });
    }
    Ok(())
}

/// An agent in `status` allows `attempt` (everything but terminated does).
///
/// # Errors
/// [`Refusal::AgentTerminated`].
pub fn agent_allows(status: AgentStatus, attempt: AgentAttempt) -> Result<(), Refusal> {
    if status == AgentStatus::Terminated {
        return Err(Refusal::AgentTerminated { attempt });
    }
    Ok(())
}

/// An agent in `status` can be assigned new work (an issue, a routine).
///
/// # Errors
/// [`Refusal::AgentNotAssignable`].
pub fn assignable(status: AgentStatus) -> Result<(), Refusal> {
    if status == AgentStatus::Terminated {
        return Err(Refusal::AgentNotAssignable);
    }
    Ok(())
}

/// A routine with `count` triggers can take one more.
///
/// # Errors
/// [`Refusal::TooManyTriggers`].
pub fn room_for_trigger(count: i64) -> Result<(), Refusal> {
    if count >= MAX_TRIGGERS_PER_ROUTINE {
        return Err(Refusal::TooManyTriggers);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_archived_routines_and_terminated_agents_refuse() {
        for status in [RoutineStatus::Active, RoutineStatus::Paused] {
            assert_eq!(routine_allows(status, RoutineAttempt::Run), Ok(()));
        }
        assert_eq!(
            routine_allows(RoutineStatus::Archived, RoutineAttempt::ChangeTriggers),
            Err(Refusal::RoutineArchived {
                attempt: RoutineAttempt::ChangeTriggers
            })
        );
        for status in [AgentStatus::Active, AgentStatus::Paused] {
            assert_eq!(agent_allows(status, AgentAttempt::IssueKey), Ok(()));
            assert_eq!(assignable(status), Ok(()));
        }
        assert_eq!(
            agent_allows(AgentStatus::Terminated, AgentAttempt::Change),
            Err(Refusal::AgentTerminated {
                attempt: AgentAttempt::Change
            })
        );
        assert_eq!(
            assignable(AgentStatus::Terminated),
            Err(Refusal::AgentNotAssignable)
        );
    }

    #[test]
    fn the_trigger_cap_admits_the_fiftieth_and_refuses_the_fifty_first() {
        assert_eq!(room_for_trigger(MAX_TRIGGERS_PER_ROUTINE - 1), Ok(()));
        assert_eq!(
            room_for_trigger(MAX_TRIGGERS_PER_ROUTINE),
            Err(Refusal::TooManyTriggers)
        );
    }

    #[test]
    fn codes_and_messages_are_the_contracts() {
        let cases = [
            (
                Refusal::RoutineArchived {
                    attempt: RoutineAttempt::Run,
                },
                "routine_archived",
                "the routine is archived; it cannot run",
            ),
            (
                Refusal::AgentTerminated {
                    attempt: AgentAttempt::IssueKey,
                },
                "agent_terminated",
                "the agent is terminated; it cannot get new keys",
            ),
            (
                Refusal::Deposed { current: 7 },
                "deposed",
                "deposed: a newer scheduler epoch (7) has written",
            ),
            (
                Refusal::TooManyTriggers,
                "too_many_triggers",
                "a routine has at most 50 triggers",
            ),
            (
                Refusal::BackfillTooLarge,
                "backfill_too_large",
                "the range holds more than 1000 fires; backfill it in smaller ranges",
            ),
        ];
        for (refusal, code, message) in cases {
            assert_eq!(refusal.code(), code);
            assert_eq!(refusal.to_string(), message);
        }
        assert_eq!(
            Refusal::IdempotencyKeyReused.kind(),
            RefusalKind::Unprocessable
        );
        assert_eq!(Refusal::Replayed.kind(), RefusalKind::Conflict);
    }
}
