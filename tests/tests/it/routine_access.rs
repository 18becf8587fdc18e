//! The access matrix of routines and triggers: every operation × every kind of caller.

use nexus_tests::{Team, TestApp, str_at};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Actor {
    /// The agent the routine is assigned to.
    AgentOwn,
    /// Another agent of the same company.
    AgentOther,
    Board,
    /// An agent of another company.
    Foreign,
    NoToken,
}

struct World {
    app: TestApp,
    team: Team,
    other_key: String,
    other_agent: String,
    foreign_key: String,
}

impl World {
    fn token(&self, actor: Actor) -> Option<&str> {
        match actor {
            Actor::AgentOwn => Some(&self.team.key),
            Actor::AgentOther => Some(&self.other_key),
            Actor::Board => Some(&self.app.board_token),
            Actor::Foreign => Some(&self.foreign_key),
            Actor::NoToken => None,
        }
    }
}

/// A fresh routine (assigned to the team's agent) with a schedule, a webhook and an api trigger.
async fn fixture(w: &World) -> (String, String, String, String) {
    let routine = w.app.seed_routine(&w.team, &json!({})).await;
    let schedule = w
        .app
        .seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "0 9 * * *" }),
        )
        .await;
    let webhook = w
        .app
        .seed_trigger(&routine, &json!({ "kind": "webhook" }))
        .await;
    let api = w
        .app
        .seed_trigger(&routine, &json!({ "kind": "api" }))
        .await;
    (
        routine,
        str_at(&schedule, "/trigger/id"),
        str_at(&webhook, "/trigger/id"),
        str_at(&api, "/trigger/id"),
    )
}

#[tokio::test]
async fn every_operation_for_every_actor() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let (other_agent, other_key) = app.seed_agent(&team.company, "Bob").await;
    let foreign_company = app.seed_company("Elsewhere").await;
    let (_, foreign_key) = app.seed_agent(&foreign_company, "Eve").await;
    let w = World {
        app,
        team,
        other_key,
        other_agent,
        foreign_key,
    };
    use Actor::{AgentOther, AgentOwn, Board, Foreign, NoToken};
    let actors = [AgentOwn, AgentOther, Board, Foreign, NoToken];

    type Case = (
        &'static str,
        Method,
        fn(&World, &(String, String, String, String)) -> (String, Option<Value>),
        [u16; 5],
    );
    let cases: Vec<Case> = vec![
        (
            "list routines",
            Method::GET,
            |w, _| (format!("/api/companies/{}/routines", w.team.company), None),
            [200, 200, 200, 404, 401],
        ),
        (
            "get routine",
            Method::GET,
            |_, f| (format!("/api/routines/{}", f.0), None),
            [200, 200, 200, 404, 401],
        ),
        (
            "upcoming",
            Method::GET,
            |_, f| (format!("/api/routines/{}/upcoming", f.0), None),
            [200, 200, 200, 404, 401],
        ),
        (
            "create routine for itself",
            Method::POST,
            |w, _| {
                let body = json!({ "title": "mine", "assigneeAgentId": w.team.agent, "projectId": w.team.project });
                (
                    format!("/api/companies/{}/routines", w.team.company),
                    Some(body),
                )
            },
            [201, 403, 201, 404, 401],
        ),
        (
            "create routine for another agent",
            Method::POST,
            |w, _| {
                let body = json!({ "title": "theirs", "assigneeAgentId": w.other_agent, "projectId": w.team.project });
                (
                    format!("/api/companies/{}/routines", w.team.company),
                    Some(body),
                )
            },
            [403, 201, 201, 404, 401],
        ),
        (
            "update routine",
            Method::PATCH,
            |_, f| {
                (
                    format!("/api/routines/{}", f.0),
                    Some(json!({ "priority": "high" })),
                )
            },
            [200, 403, 200, 404, 401],
        ),
        (
            "reassign routine",
            Method::PATCH,
            |w, f| {
                (
                    format!("/api/routines/{}", f.0),
                    Some(json!({ "assigneeAgentId": w.other_agent })),
                )
            },
            [403, 403, 200, 404, 401],
        ),
        (
            "pause routine",
            Method::PATCH,
            |_, f| {
                (
                    format!("/api/routines/{}", f.0),
                    Some(json!({ "status": "paused" })),
                )
            },
            [200, 403, 200, 404, 401],
        ),
        (
            "add trigger",
            Method::POST,
            |_, f| {
                (
                    format!("/api/routines/{}/triggers", f.0),
                    Some(json!({ "kind": "api" })),
                )
            },
            [201, 403, 201, 404, 401],
        ),
        (
            "update trigger",
            Method::PATCH,
            |_, f| {
                (
                    format!("/api/routine-triggers/{}", f.1),
                    Some(json!({ "label": "x" })),
                )
            },
            [200, 403, 200, 404, 401],
        ),
        (
            "delete trigger",
            Method::DELETE,
            |_, f| (format!("/api/routine-triggers/{}", f.3), None),
            [204, 403, 204, 404, 401],
        ),
        (
            "rotate secret",
            Method::POST,
            |_, f| (format!("/api/routine-triggers/{}/rotate-secret", f.2), None),
            [200, 403, 200, 404, 401],
        ),
    ];
    let mut failures = Vec::new();
    for (name, method, request, expected) in &cases {
        for (actor, status) in actors.iter().zip(expected) {
            // Each cell acts on its own fresh routine, so earlier cells cannot affect it.
            let fixture = fixture(&w).await;
            let (path, body) = request(&w, &fixture);
            let resp = w
                .app
                .caller(w.token(*actor))
                .send(method.clone(), &path, body.as_ref())
                .await;
            if resp.status != *status {
                failures.push(format!(
                    "{name} as {actor:?}: expected {status}, got {} {}",
                    resp.status, resp.text
                ));
            }
            if resp.status == 403
                && !resp.body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("agent"))
            {
                failures.push(format!(
                    "{name} as {actor:?}: 403 without a sentence saying why"
                ));
            }
            if *status >= 400 {
                // A refused change left the routine as it was.
                let routine = w.app.board().get_routine(&fixture.0).await.expect(200).body;
                if routine["priority"] != "medium"
                    || routine["status"] != "active"
                    || routine["assigneeAgentId"] != w.team.agent.as_str()
                    || routine["triggers"].as_array().map(Vec::len) != Some(3)
                {
                    failures.push(format!(
                        "{name} as {actor:?}: refused but the routine changed: {routine}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
