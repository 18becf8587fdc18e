//! Who may do what: the access rules every API operation asks before it loads or writes. A
//! [`Denial`] says why; the API answers it (403, or 404 where the rows must stay invisible).

use uuid::Uuid;

use crate::model::Actor;

/// Why an actor may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Only a board token may do it.
    #[error("only a board token may")]
    NotBoard,
    /// Only an agent may do it.
    #[error("only an agent may")]
    NotAgent,
    /// The rows belong to a company the actor does not see (answered as if absent).
    #[error("not visible")]
    NotVisible,
    /// An agent may only manage routines assigned to itself.
    #[error("an agent may only manage routines assigned to itself")]
    NotOwnRoutine,
    /// An agent cannot assign a routine to another agent.
    #[error("an agent cannot assign a routine to another agent")]
    AssignToOther,
}

/// The board, and nobody else.
///
/// # Errors
/// [`Denial::NotBoard`].
pub fn board(actor: Actor) -> Result<(), Denial> {
    match actor {
        Actor::Board { .. } => Ok(()),
        _ => Err(Denial::NotBoard),
    }
}

/// An agent, and which one.
///
/// # Errors
/// [`Denial::NotAgent`].
pub fn agent(actor: Actor) -> Result<Uuid, Denial> {
    match actor {
        Actor::Agent { agent_id, .. } => Ok(agent_id),
        _ => Err(Denial::NotAgent),
    }
}

/// The rows of `company_id`: the board (and the system) see every company, an agent its own.
///
/// # Errors
/// [`Denial::NotVisible`].
pub fn sees(actor: Actor, company_id: Uuid) -> Result<(), Denial> {
    if actor.sees_company(company_id) {
        Ok(())
    } else {
        Err(Denial::NotVisible)
    }
}

/// Whether `actor` is the agent `agent_id`.
#[must_use]
pub fn is_agent(actor: Actor, agent_id: Uuid) -> bool {
    matches!(actor, Actor::Agent { agent_id: own, .. } if own == agent_id)
}

/// A routine assigned to `assignee`: the board, or that agent itself, may manage it.
///
/// # Errors
/// [`Denial::NotOwnRoutine`].
pub fn manage_routine(actor: Actor, assignee: Uuid) -> Result<(), Denial> {
    if board(actor).is_ok() || is_agent(actor, assignee) {
        Ok(())
    } else {
        Err(Denial::NotOwnRoutine)
    }
}

/// Assigning a routine to `assignee`: the board to anyone, an agent only to itself.
///
/// # Errors
/// [`Denial::AssignToOther`].
pub fn assign_routine_to(actor: Actor, assignee: Uuid) -> Result<(), Denial> {
    if board(actor).is_ok() || is_agent(actor, assignee) {
        Ok(())
    } else {
        Err(Denial::AssignToOther)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_does_everything_and_an_agent_only_its_own() {
        let (company, other_company) = (Uuid::now_v7(), Uuid::now_v7());
        let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
        let board_actor = Actor::Board {
            token_id: Uuid::now_v7(),
        };
        let agent_actor = Actor::Agent {
            agent_id: me,
            company_id: company,
        };
        assert_eq!(board(board_actor), Ok(()));
        assert_eq!(board(agent_actor), Err(Denial::NotBoard));
        assert_eq!(agent(agent_actor), Ok(me));
        assert_eq!(agent(board_actor), Err(Denial::NotAgent));
        assert_eq!(sees(board_actor, other_company), Ok(()));
        assert_eq!(sees(agent_actor, company), Ok(()));
        assert_eq!(sees(agent_actor, other_company), Err(Denial::NotVisible));
        assert_eq!(manage_routine(agent_actor, me), Ok(()));
        assert_eq!(
            manage_routine(agent_actor, other),
            Err(Denial::NotOwnRoutine)
        );
        assert_eq!(manage_routine(board_actor, other), Ok(()));
        assert_eq!(
            assign_routine_to(agent_actor, other),
            Err(Denial::AssignToOther)
        );
        assert_eq!(assign_routine_to(board_actor, other), Ok(()));
    }
}
