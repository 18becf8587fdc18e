fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("time")
        .to_utc()
}

use super::*;

nexus_tests::conformance! {
    async fn fire_lateness_counts_the_interval_s_on_time_fires_and_samples_the_first_that_woke_an_agent(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("* * * * *", "UTC"), board()).await.expect("trigger");
        let (grace, lease) = (TimeDelta::seconds(60), Duration::from_secs(30));
        // The fires at 10:01 and 10:02, each handled 1 s late and dispatched 2 s after that.
        for minute in ["10:01", "10:02"] {
            clock.set(at(&format!("2026-11-30T{minute}:01Z")));
            assert_eq!(store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire").dispatched, 1);
            clock.set(at(&format!("2026-11-30T{minute}:03Z")));
            store.claim_and_dispatch("w", lease, 100).await.expect("take");
        }
        let one = store.fire_lateness(at("2026-11-30T10:01:00Z"), at("2026-11-30T10:02:00Z"), 10).await.expect("lateness");
        assert_eq!((one.fires, one.lateness.as_slice()), (1, [3.0].as_slice()), "[from, to): the fire at `to` is the next interval's");
        let both = store.fire_lateness(at("2026-11-30T10:01:00Z"), at("2026-11-30T10:02:00.001Z"), 10).await.expect("lateness");
        assert_eq!((both.fires, both.lateness.len()), (2, 2));
        let sampled = store.fire_lateness(at("2026-11-30T10:00:00Z"), at("2026-11-30T10:03:00Z"), 1).await.expect("lateness");
        assert_eq!((sampled.fires, sampled.lateness.len()), (2, 1), "every fire counted, the first sampled");

        // A backfilled fire (caught up) and a manual run are not schedule lateness.
        let range = nexus_shared::store::BackfillRange { from: at("2026-11-30T09:58:00Z"), to: at("2026-11-30T10:00:00Z"), trigger_id: None };
        store.backfill(routine_id, range, board()).await.expect("backfill");
        store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run");
        store.claim_and_dispatch("w", lease, 100).await.expect("take");
        let earlier = store.fire_lateness(at("2026-11-30T09:00:00Z"), at("2026-11-30T10:01:00Z"), 10).await.expect("lateness");
        assert_eq!(earlier, nexus_shared::store::FireLateness::default());
    }

    async fn the_scheduler_leader_is_the_last_one_that_fired_with_a_new_epoch(store, clock) {
        let before = store.scheduler_leader().await.expect("leader");
        assert_eq!((before.epoch, before.leader_id), (0, None));
        clock.set(at("2026-11-30T10:05:00Z"));
        store.fire_due(&leader(3), TimeDelta::seconds(60), TimeDelta::zero(), 500).await.expect("fire");
        let after = store.scheduler_leader().await.expect("leader");
        assert_eq!((after.epoch, after.leader_id.as_deref(), after.since), (3, Some("test-3"), at("2026-11-30T10:05:00Z")));
    }
}
