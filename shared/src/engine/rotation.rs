//! A webhook trigger's secret: which secret a trigger gets (generated here, or issued by the
//! sender), and rotating it with a grace period: what becomes of the secret being replaced.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    crypto::{generate_standard_webhooks_secret, generate_token},
    engine::refusal::Refusal,
    model::{SenderSecret, SigningMode},
};

/// Prefix of the webhook secrets generated here (every mode but Standard Webhooks').
pub const WEBHOOK_SECRET_PREFIX: &str = "nxw_";

/// The longest grace period a rotation may give the secret it replaces (a week).
pub const MAX_ROTATION_GRACE_SEC: i64 = 604_800;

/// A rotation's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// How long the secret being replaced keeps working (zero: it stops at once).
    pub grace: TimeDelta,
    /// End a previous secret still in its grace period instead of refusing.
    pub force: bool,
    /// The new secret, when the sender issues it (see [`webhook_secret`]).
    pub sender_secret: Option<SenderSecret>,
}

/// The secret a webhook trigger signing with `mode` gets: the one its sender issued, when the
/// mode takes one (Stripe, Slack) and it was given; else a new one, `whsec_<base64>` for
/// Standard Webhooks (the form its senders expect), `nxw_` and 256 random bits otherwise. A
/// sender-issued mode created without the sender's secret gets a generated one, which no
/// sender's request matches until the sender's is set by a rotation (a Stripe endpoint's
/// secret exists only once the endpoint, and so the URL, does).
///
/// # Errors
/// [`Refusal::SecretNotSettable`]: a secret was given for a mode whose secrets are generated.
pub fn webhook_secret(mode: SigningMode, given: Option<&SenderSecret>) -> Result<String, Refusal> {
    match given {
        Some(secret) if mode.sender_issues_secret() => Ok(secret.expose().to_owned()),
        Some(_) => Err(Refusal::SecretNotSettable),
        None if mode == SigningMode::StandardWebhooks => Ok(generate_standard_webhooks_secret()),
        None => Ok(generate_token(WEBHOOK_SECRET_PREFIX)),
    }
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
    rotation: &Rotation,
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
            ..Rotation::default()
        };
        assert_eq!(
            previous_after("old", None, now, &day),
            Ok(Some(("old", at("2026-12-05T10:00:00Z"))))
        );
        assert_eq!(
            previous_after("old", None, now, &Rotation::default()),
            Ok(None)
        );
        let until = Some(at("2026-12-05T10:00:00Z"));
        assert_eq!(
            previous_after("newer", until, now, &day),
            Err(Refusal::RotationInProgress)
        );
        // At the instant it expires it no longer holds a rotation back.
        assert_eq!(
            previous_after("newer", until, at("2026-12-05T10:00:00Z"), &day),
            Ok(Some(("newer", at("2026-12-06T10:00:00Z"))))
        );
        let forced = Rotation { force: true, ..day };
        assert_eq!(
            previous_after("newer", until, now, &forced),
            Ok(Some(("newer", at("2026-12-05T10:00:00Z"))))
        );
        let forced_now = Rotation {
            force: true,
            ..Rotation::default()
        };
        assert_eq!(previous_after("newer", until, now, &forced_now), Ok(None));
    }

    #[test]
    fn only_the_modes_whose_sender_issues_the_secret_take_one() {
        let given = SenderSecret::parse("whsec_abcdefghijklmnop".to_owned()).expect("secret");
        for mode in [SigningMode::Stripe, SigningMode::Slack] {
            assert_eq!(
                webhook_secret(mode, Some(&given)).as_deref(),
                Ok("whsec_abcdefghijklmnop")
            );
            assert!(
                webhook_secret(mode, None)
                    .expect("generated")
                    .starts_with("nxw_")
            );
        }
        for mode in [
            SigningMode::Bearer,
            SigningMode::HmacSha256,
            SigningMode::StandardWebhooks,
            SigningMode::Github,
        ] {
            assert_eq!(
                webhook_secret(mode, Some(&given)),
                Err(Refusal::SecretNotSettable)
            );
        }
        assert!(
            webhook_secret(SigningMode::StandardWebhooks, None)
                .expect("generated")
                .starts_with("whsec_")
        );
        assert!(SenderSecret::parse("short".to_owned()).is_err());
        assert!(SenderSecret::parse("has a space in the middle".to_owned()).is_err());
        assert!(SenderSecret::parse("x".repeat(257)).is_err());
    }
}
