use nexus_shared::store::{ChangeKind, EVENTS_KEPT};

use super::*;

/// Relays everything committed; returns the events of `company` (all, when `None`) after `after`.
macro_rules! relayed {
    ($store:expr, $company:expr, $after:expr) => {{
        $store.relay_events(1_000).await.expect("relay");
        $store
            .events_after($company, $after, 1_000)
            .await
            .expect("events")
            .into_iter()
            .map(|e| (e.kind, e.resource_id))
            .collect::<Vec<_>>()
    }};
}

nexus_tests::conformance! {
    async fn every_change_to_a_routine_its_triggers_and_runs_is_numbered_in_the_order_it_committed(store, _clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        assert_eq!(relayed!(store, Some(company), 0), [(ChangeKind::RoutineUpdated, routine_id)]);
        let start = store.event_log().await.expect("log").last_id;
        assert_eq!(store.relay_events(1_000).await.expect("relay"), 0, "nothing new to relay");

        let trigger = store.create_trigger(routine_id, schedule("0 9 * * 1-5", "Europe/Amsterdam"), board()).await.expect("trigger").0.id;
        let run = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        assert_eq!(drain!(store, "w"), [RunStatus::IssueCreated]);
        store.delete_trigger(trigger, board()).await.expect("delete");
        let events = relayed!(store, Some(company), start);
        assert_eq!(events.first(), Some(&(ChangeKind::TriggerUpdated, trigger)));
        assert!(events.contains(&(ChangeKind::RunCreated, run)), "{events:?}");
        let created = events.iter().position(|e| *e == (ChangeKind::RunCreated, run)).expect("created");
        let updated = events.iter().rposition(|e| *e == (ChangeKind::RunUpdated, run)).expect("updated at dispatch");
        assert!(created < updated);
        assert_eq!(events.last(), Some(&(ChangeKind::TriggerDeleted, trigger)));

        let numbers: Vec<i64> = store.events_after(Some(company), start, 1_000).await.expect("events").iter().map(|e| e.id).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "increasing: {numbers:?}");
        assert_eq!(store.event_log().await.expect("log").last_id, *numbers.last().expect("some"));

        // Another company's changes are numbered in the same log, and listed only for it.
        let (other, _, other_routine) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let last = *numbers.last().expect("some");
        assert_eq!(relayed!(store, Some(company), last), []);
        assert_eq!(relayed!(store, Some(other), 0), [(ChangeKind::RoutineUpdated, other_routine)]);
        assert_eq!(relayed!(store, None, last), [(ChangeKind::RoutineUpdated, other_routine)]);
        // A batch smaller than what waits moves the oldest first.
        let limited = store.events_after(None, 0, 2).await.expect("events");
        assert_eq!(limited.len(), 2);
        assert!(limited[0].id < limited[1].id);
    }

    async fn a_refused_change_leaves_no_event(store, _clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let archive = RoutineChanges { status: Some(RoutineStatus::Archived), ..RoutineChanges::default() };
        store.update_routine(routine_id, archive, board()).await.expect("archive");
        let before = relayed!(store, Some(company), 0).len();
        let rename = RoutineChanges { title: Some(title("Renamed")), ..RoutineChanges::default() };
        assert!(matches!(store.update_routine(routine_id, rename, board()).await, Err(StoreError::Refused(_))));
        assert!(store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.is_err());
        assert_eq!(relayed!(store, Some(company), 0).len(), before, "the refused changes rolled back with their events");
    }

    async fn events_are_kept_a_few_minutes_and_the_log_says_how_far_it_was_deleted(store, clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        assert_eq!(relayed!(store, Some(company), 0).len(), 1);
        let first = store.event_log().await.expect("log");
        assert_eq!(first.purged_through, 0);
        assert!(first.can_resume(0) && first.can_resume(first.last_id));
        assert!(!first.can_resume(first.last_id + 1), "a number never given is not resumed from");

        // Exactly the kept time later the events are still there; a millisecond more and not.
        clock.advance(EVENTS_KEPT);
        let rename = RoutineChanges { title: Some(title("Renamed")), ..RoutineChanges::default() };
        store.update_routine(routine_id, rename, board()).await.expect("rename");
        assert_eq!(relayed!(store, Some(company), 0).len(), 2, "the old event is kept at the boundary");
        clock.advance(TimeDelta::milliseconds(1));
        assert_eq!(relayed!(store, Some(company), 0), [(ChangeKind::RoutineUpdated, routine_id)]);
        let log = store.event_log().await.expect("log");
        assert_eq!(log.purged_through, first.last_id);
        assert!(!log.can_resume(first.last_id - 1), "a client that missed a deleted event is reset");
        assert!(log.can_resume(first.last_id));
        assert_eq!(log.last_id, first.last_id + 1);
    }
}
