use nexus_shared::{
    engine::fires::fire_instant,
    model::JitterSec,
    store::{BackfillRange, Refusal},
};

use super::*;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("2026-11-30T{s}Z"))
        .expect("time")
        .to_utc()
}

fn jittered(cron: &str, jitter: i64) -> NewTrigger {
    let mut trigger = schedule(cron, "UTC");
    if let NewTriggerKind::Schedule { jitter: j, .. } = &mut trigger.kind {
        *j = JitterSec::parse(jitter).expect("jitter");
    }
    trigger
}

fn range(from: &str, to: &str) -> BackfillRange {
    BackfillRange {
        from: at(from),
        to: at(to),
        trigger_id: None,
    }
}

nexus_tests::conformance! {
    async fn a_jittered_fire_takes_effect_at_its_offset_and_the_grace_counts_from_it(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let (grace, ahead, lease) = (TimeDelta::seconds(60), TimeDelta::seconds(5), Duration::from_secs(30));
        // A trigger whose 11:00 offset is over two minutes (ids are random: a few tries).
        let (trigger, real) = loop {
            let trigger = store.create_trigger(routine_id, jittered("0 11 * * *", 600), board()).await.expect("trigger").0;
            let real = fire_instant(trigger.id, at("11:00:00"), 600);
            if real - at("11:00:00") > TimeDelta::seconds(120) {
                break (trigger, real);
            }
            store.delete_trigger(trigger.id, board()).await.expect("delete");
        };
        assert_eq!(next_run_at(&trigger.config), Some(real), "nextRunAt is the real instant");
        // Prepared at the nominal time minus the lookahead, due at the real instant.
        clock.set(at("10:59:57"));
        let report = store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare");
        assert_eq!((report.dispatched, report.prepared), (1, 1));
        assert_eq!(store.next_job_at().await.expect("next"), Some(real));
        clock.set(real - TimeDelta::milliseconds(1));
        assert!(store.runs(routine_id, None, 50).await.expect("runs").is_empty(), "not visible before it takes effect");
        assert!(store.claim_and_dispatch("w", lease, 100).await.expect("take").is_empty());
        clock.set(real);
        let runs = store.runs(routine_id, None, 50).await.expect("runs");
        assert_eq!((runs.len(), runs[0].scheduled_for, runs[0].triggered_at), (1, Some(at("11:00:00")), real));
        let taken = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!(taken.outcomes, [(runs[0].id, RunStatus::IssueCreated)]);
        // Without jitter the next fire is the nominal time again.
        let none = TriggerChanges { jitter: Some(JitterSec::parse(0).expect("jitter")), ..Default::default() };
        let changed = store.update_trigger(trigger.id, none, board()).await.expect("update");
        assert_eq!(next_run_at(&changed.config), Some(at("11:00:00") + TimeDelta::days(1)));

        // A fire handled a grace after its real instant is on time, though its nominal time is
        // minutes older; a millisecond later it is missed.
        let (_, _, other) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let real = loop {
            let trigger = store.create_trigger(other, jittered("0 12 * * *", 3600), board()).await.expect("trigger").0;
            let real = fire_instant(trigger.id, at("12:00:00"), 3600);
            if real - at("12:00:00") > TimeDelta::seconds(120) {
                break real;
            }
            store.delete_trigger(trigger.id, board()).await.expect("delete");
        };
        clock.set(real + grace);
        let report = store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        assert_eq!((report.dispatched, report.missed_fires), (1, 0));
        let (_, _, third) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let real = loop {
            let trigger = store.create_trigger(third, jittered("0 14 * * *", 3600), board()).await.expect("trigger").0;
            let real = fire_instant(trigger.id, at("14:00:00"), 3600);
            if real - at("14:00:00") > TimeDelta::seconds(120) {
                break real;
            }
            store.delete_trigger(trigger.id, board()).await.expect("delete");
        };
        clock.set(real + grace + TimeDelta::milliseconds(1));
        let report = store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        assert_eq!((report.dispatched, report.missed_fires, report.skipped_runs), (0, 1, 1));
    }

    async fn backfill_makes_each_fire_once_oldest_first_and_leaves_existing_runs(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let trigger = store.create_trigger(routine_id, schedule("*/15 * * * *", "UTC"), board()).await.expect("trigger").0.id;
        let (grace, lease) = (TimeDelta::seconds(60), Duration::from_secs(30));
        clock.set(at("10:15:01"));
        assert_eq!(store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire").dispatched, 1);
        drain!(store, "w");
        // [09:00, 11:00:30): nine fires, 10:15 already has its run.
        clock.set(at("11:00:30"));
        let done = store.backfill(routine_id, range("09:00:00", "11:00:30"), board()).await.expect("backfill");
        let nominal: Vec<_> = done.runs.iter().map(|r| r.scheduled_for).collect();
        let want: Vec<_> = ["09:00", "09:15", "09:30", "09:45", "10:00", "10:30", "10:45", "11:00"]
            .iter()
            .map(|t| Some(at(&format!("{t}:00"))))
            .collect();
        assert_eq!((nominal, done.existing), (want, 1));
        for run in &done.runs {
            assert_eq!((run.source, run.status, run.catch_up, run.trigger_id), (RunSource::Backfill, RunStatus::Received, true, Some(trigger)));
        }
        // Again: nothing new. The fire pass finds the fires it would handle done as well (10:30
        // and 10:45 missed, 11:00 on time) and reports nothing it did not write.
        let again = store.backfill(routine_id, range("09:00:00", "11:00:30"), board()).await.expect("again");
        assert_eq!((again.runs.len(), again.existing), (0, 9));
        let report = store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        assert_eq!((report.dispatched, report.skipped_runs, report.missed_fires), (0, 0, 2));
        let runs = store.runs(routine_id, None, 50).await.expect("runs");
        let mut fires: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
        fires.sort();
        fires.dedup();
        assert_eq!((runs.len(), fires.len()), (9, 9), "one run per fire");
        // Dispatched oldest first.
        let taken = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        let order: Vec<_> = taken.outcomes.iter().map(|(id, _)| *id).collect();
        let backfilled: Vec<_> = done.runs.iter().map(|r| r.id).collect();
        assert_eq!(order, backfilled);
    }

    async fn backfill_is_bounded_and_refused_where_a_manual_run_is(store, _clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("* * * * *", "UTC"), board()).await.expect("trigger");
        let too_large = store.backfill(routine_id, range("09:00:00", "09:00:00") , board()).await;
        assert_eq!(too_large.map(|d| d.runs.len()).ok(), Some(0), "an empty range has no fires");
        let from = at("10:00:00") - TimeDelta::minutes(1001);
        let refused = store.backfill(routine_id, BackfillRange { from, ..range("00:00:00", "10:00:00") }, board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(Refusal::BackfillTooLarge))), "{refused:?}");
        assert!(store.runs(routine_id, None, 50).await.expect("runs").is_empty(), "nothing created");
        let from = at("10:00:00") - TimeDelta::minutes(1000);
        let done = store.backfill(routine_id, BackfillRange { from, ..range("00:00:00", "10:00:00") }, board()).await.expect("backfill");
        assert_eq!(done.runs.len(), 1000);
        let api = NewTrigger { kind: NewTriggerKind::Api, label: Label::default(), enabled: true };
        let api = store.create_trigger(routine_id, api, board()).await.expect("trigger").0.id;
        let named = store.backfill(routine_id, BackfillRange { trigger_id: Some(api), ..range("09:00:00", "09:01:00") }, board()).await;
        assert!(matches!(named, Err(StoreError::InvalidReference { field: "triggerId" })), "{named:?}");
        store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Archived), ..Default::default() }, board()).await.expect("archive");
        let archived = store.backfill(routine_id, range("09:00:00", "09:01:00"), board()).await;
        assert!(matches!(archived, Err(StoreError::Refused(ref r)) if r.code() == "routine_archived"), "{archived:?}");
        let unknown = store.backfill(Uuid::now_v7(), range("09:00:00", "09:01:00"), board()).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    }

    async fn a_rotation_with_grace_keeps_the_replaced_secret_until_it_ends_then_destroys_it(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let hook = NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: SigningMode::Bearer, replay_window: ReplayWindow::parse(300).expect("window"), sender_secret: None },
            label: Label::default(),
            enabled: true,
        };
        let (trigger, first) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
        let first = first.expect("secret").webhook_secret;
        let TriggerConfig::Webhook { public_id, .. } = &trigger.config else { panic!("webhook") };
        let hour = Rotation { grace: TimeDelta::hours(1), ..Rotation::default() };
        let (rotated, second) = store.rotate_trigger_secret(trigger.id, hour.clone(), board()).await.expect("rotate");
        let until = clock.now() + TimeDelta::hours(1);
        let TriggerConfig::Webhook { previous_secret_expires_at, .. } = rotated.config else { panic!("webhook") };
        assert_eq!(previous_secret_expires_at, Some(until));
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        let now = clock.now();
        assert_eq!(read.secrets_at(now).collect::<Vec<_>>(), [second.webhook_secret.as_str(), first.as_str()]);
        assert_eq!(read.secrets_at(until).collect::<Vec<_>>(), [second.webhook_secret.as_str()], "not at its end");
        // A second rotation waits for the grace to end, or ends it.
        let refused = store.rotate_trigger_secret(trigger.id, hour.clone(), board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(Refusal::RotationInProgress))), "{refused:?}");
        // Nothing is destroyed before its end; at its end the replaced secret is gone from the
        // row (the sealed bytes too), and a read no longer opens it.
        assert_eq!(store.destroy_expired_secrets().await.expect("destroy"), 0);
        clock.set(until);
        assert_eq!(store.destroy_expired_secrets().await.expect("destroy"), 1);
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        assert!(read.previous.is_none());
        let shown = store.trigger(trigger.id).await.expect("trigger").trigger;
        let TriggerConfig::Webhook { previous_secret_expires_at, .. } = shown.config else { panic!("webhook") };
        assert_eq!(previous_secret_expires_at, None);
        // With the grace over, rotating is allowed again; forcing during a grace replaces
        // without keeping the older one.
        let (_, third) = store.rotate_trigger_secret(trigger.id, hour.clone(), board()).await.expect("rotate");
        let forced = Rotation { force: true, ..Rotation::default() };
        let (_, fourth) = store.rotate_trigger_secret(trigger.id, forced, board()).await.expect("forced");
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        assert_eq!(read.secrets_at(clock.now()).collect::<Vec<_>>(), [fourth.webhook_secret.as_str()]);
        assert_ne!(third.webhook_secret, fourth.webhook_secret);
    }

    async fn a_sender_issued_secret_is_kept_as_given_and_refused_where_secrets_are_generated(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let issued = SenderSecret::parse("whsec_issued_by_the_sender_01234".to_owned()).expect("secret");
        let webhook = |mode, sender_secret| NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: mode, replay_window: ReplayWindow::parse(300).expect("window"), sender_secret },
            label: Label::default(),
            enabled: true,
        };
        let (stripe, material) = store.create_trigger(routine_id, webhook(SigningMode::Stripe, Some(issued.clone())), board()).await.expect("stripe");
        assert_eq!(material.expect("secret").webhook_secret, issued.expose());
        let TriggerConfig::Webhook { public_id, .. } = &stripe.config else { panic!("webhook") };
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        assert_eq!(read.secrets_at(clock.now()).collect::<Vec<_>>(), [issued.expose()]);
        // A rotation sets the sender's next secret, keeping the first for its grace.
        let next = SenderSecret::parse("whsec_next_issued_by_the_sender_5".to_owned()).expect("secret");
        let rotation = Rotation { grace: TimeDelta::minutes(10), sender_secret: Some(next.clone()), ..Rotation::default() };
        store.rotate_trigger_secret(stripe.id, rotation, board()).await.expect("rotate");
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        assert_eq!(read.secrets_at(clock.now()).collect::<Vec<_>>(), [next.expose(), issued.expose()]);
        // Without one, a slack trigger gets a generated secret.
        let (_, generated) = store.create_trigger(routine_id, webhook(SigningMode::Slack, None), board()).await.expect("slack");
        assert!(generated.expect("secret").webhook_secret.starts_with("nxw_"));
        // Modes whose secrets are generated refuse one, on creation and on rotation, and
        // change nothing.
        let before = store.routine(routine_id).await.expect("routine").triggers.len();
        for mode in [SigningMode::Bearer, SigningMode::HmacSha256, SigningMode::StandardWebhooks, SigningMode::Github] {
            let refused = store.create_trigger(routine_id, webhook(mode, Some(issued.clone())), board()).await;
            assert!(matches!(refused, Err(StoreError::Refused(Refusal::SecretNotSettable))), "{mode:?}: {refused:?}");
        }
        assert_eq!(store.routine(routine_id).await.expect("routine").triggers.len(), before);
        let (bearer, secret) = store.create_trigger(routine_id, webhook(SigningMode::Bearer, None), board()).await.expect("bearer");
        let rotation = Rotation { sender_secret: Some(issued), ..Rotation::default() };
        let refused = store.rotate_trigger_secret(bearer.id, rotation, board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(Refusal::SecretNotSettable))), "{refused:?}");
        let TriggerConfig::Webhook { public_id, .. } = &bearer.config else { panic!("webhook") };
        let read = store.webhook_trigger(public_id).await.expect("read").expect("found");
        assert_eq!(read.secrets_at(clock.now()).collect::<Vec<_>>(), [secret.expect("secret").webhook_secret.as_str()]);
    }
}
