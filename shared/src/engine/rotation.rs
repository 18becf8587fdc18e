//! Rotating a webhook secret with a grace period: what becomes of the secret being replaced.

use chrono::{DateTime, TimeDelta, Utc};

use crate::engine::refusal::Refusal;

/// The longest grace period a rotation may give the secret it replaces (a week).
pub const MAX_ROTATION_GRACE_SEC: i64 = 604_800;

/// A rotation's options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// How long the secret being replaced keeps working (zero: it stops at once).
    pub grace: TimeDelta,
    /// End a previous secret still in its grace period instead of refusing.
    pub force: bool,
}

/// The previous secret a rotation leaves: the one it replaces (`current`, sealed), valid until
/// `now + grace`, or none when the grace is zero. A previous secret still valid at `now`
/// (`previous_until`) refuses the rotation unless it is forced, which ends that one at once.
///
/// # Errors
/// [`Refusal::RotationInProgress`].
pub fn previous_after<S>(
    current: S,
    previous_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    rotation: Rotation,
) -> Result<Option<(S, DateTime<Utc>)>, Refusal> {
    if previous_until.is_some_and(|until| until > now) && !rotation.force {
        return Err(Refusal::RotationInProgress);
    }
    Ok((rotation.grace > TimeDelta::zero()).then(|| (current, now + rotation.grace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn the_replaced_secret_lives_for_the_grace_and_a_second_rotation_waits_or_forces() {
        let now = at("2026-12-04T10:00:00Z");
        let day = Rotation {
            grace: TimeDelta::days(1),
            force: false,
        };
        assert_eq!(
            previous_after("old", None, now, day),
            Ok(Some(("old", at("2026-12-05T10:00:00Z"))))
        );
        assert_eq!(
            previous_after("old", None, now, Rotation::default()),
            Ok(None)
        );
        let until = Some(at("2026-12-05T10:00:00Z"));
        assert_eq!(
            previous_after("newer", until, now, day),
            Err(Refusal::RotationInProgress)
        );
        // At the instant it expires it no longer holds a rotation back.
        assert_eq!(
            previous_after("newer", until, at("2026-12-05T10:00:00Z"), day),
            Ok(Some(("newer", at("2026-12-06T10:00:00Z"))))
        );
        let forced = Rotation { force: true, ..day };
        assert_eq!(
            previous_after("newer", until, now, forced),
            Ok(Some(("newer", at("2026-12-05T10:00:00Z"))))
        );
        let forced_now = Rotation {
            force: true,
            grace: TimeDelta::zero(),
        };
        assert_eq!(previous_after("newer", until, now, forced_now), Ok(None));
    }
}
