//! [`Caller`]: one method per endpoint of the API, as a given token (or none).

use reqwest::{Method, header::HeaderMap};
use serde_json::Value;

use crate::TestApp;

/// A response, with its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Parsed body.
    pub body: Value,
    /// Raw body text.
    pub text: String,
}

impl Resp {
    /// Asserts the status and returns the response.
    ///
    /// # Panics
    /// When the status differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an error response: the status, the contract's error shape and the code.
    ///
    /// # Panics
    /// When any of them differs.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        let resp = self.expect(status);
        assert!(
            resp.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "no error sentence: {}",
            resp.text
        );
        assert_eq!(resp.body["code"], code, "error code; body: {}", resp.text);
        let keys: Vec<&String> = resp
            .body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert!(
            keys.iter()
                .all(|k| ["error", "code", "details"].contains(&k.as_str())),
            "error body has other keys: {}",
            resp.text
        );
        resp
    }

    /// The `id` field of the body.
    ///
    /// # Panics
    /// When there is none.
    #[must_use]
    pub fn id(&self) -> String {
        crate::str_at(&self.body, "/id")
    }
}

/// Calls the API with one token.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl<'a> Caller<'a> {
    pub(crate) fn new(app: &'a TestApp, token: Option<String>) -> Self {
        Self { app, token }
    }

    /// Sends a request with an optional JSON body.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut request = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.finish(request).await
    }

    /// Sends a JSON body with extra headers.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish(request).await
    }

    /// Sends raw bytes with a content type (or none), for malformed-input tests.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut request = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.finish(request).await
    }

    async fn finish(&self, mut request: reqwest::RequestBuilder) -> Resp {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// `POST /api/companies`
    pub async fn create_company(&self, body: &Value) -> Resp {
        self.post("/api/companies", body).await
    }

    /// `GET /api/companies`
    pub async fn list_companies(&self) -> Resp {
        self.get("/api/companies").await
    }

    /// `POST /api/companies/{companyId}/agents`
    pub async fn create_agent(&self, company: &str, body: &Value) -> Resp {
        self.post(&format!("/api/companies/{company}/agents"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/agents`
    pub async fn list_agents(&self, company: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/agents")).await
    }

    /// `PATCH /api/agents/{agentId}`
    pub async fn update_agent(&self, agent: &str, body: &Value) -> Resp {
        self.patch(&format!("/api/agents/{agent}"), body).await
    }

    /// `POST /api/agents/{agentId}/keys`
    pub async fn create_agent_key(&self, agent: &str) -> Resp {
        self.send(Method::POST, &format!("/api/agents/{agent}/keys"), None)
            .await
    }

    /// `DELETE /api/agents/{agentId}/keys/{keyId}`
    pub async fn revoke_agent_key(&self, agent: &str, key: &str) -> Resp {
        self.send(
            Method::DELETE,
            &format!("/api/agents/{agent}/keys/{key}"),
            None,
        )
        .await
    }

    /// `POST /api/companies/{companyId}/projects`
    pub async fn create_project(&self, company: &str, body: &Value) -> Resp {
        self.post(&format!("/api/companies/{company}/projects"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/projects`
    pub async fn list_projects(&self, company: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/projects"))
            .await
    }

    /// `POST /api/companies/{companyId}/goals`
    pub async fn create_goal(&self, company: &str, body: &Value) -> Resp {
        self.post(&format!("/api/companies/{company}/goals"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/goals`
    pub async fn list_goals(&self, company: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/goals")).await
    }

    /// `POST /api/companies/{companyId}/issues`
    pub async fn create_issue(&self, company: &str, body: &Value) -> Resp {
        self.post(&format!("/api/companies/{company}/issues"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/issues?{query}`
    pub async fn list_issues(&self, company: &str, query: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/issues?{query}"))
            .await
    }

    /// `GET /api/issues/{issueId}`
    pub async fn get_issue(&self, issue: &str) -> Resp {
        self.get(&format!("/api/issues/{issue}")).await
    }

    /// `PATCH /api/issues/{issueId}`
    pub async fn update_issue(&self, issue: &str, body: &Value) -> Resp {
        self.patch(&format!("/api/issues/{issue}"), body).await
    }

    /// `GET /api/agents/me`
    pub async fn me(&self) -> Resp {
        self.get("/api/agents/me").await
    }

    /// `GET /api/agents/me/heartbeat-runs?{query}`
    pub async fn my_heartbeat_runs(&self, query: &str) -> Resp {
        self.get(&format!("/api/agents/me/heartbeat-runs?{query}"))
            .await
    }

    /// `POST /api/heartbeat-runs/{id}/claim`
    pub async fn claim_heartbeat_run(&self, id: &str) -> Resp {
        self.send(
            Method::POST,
            &format!("/api/heartbeat-runs/{id}/claim"),
            None,
        )
        .await
    }

    /// `POST /api/heartbeat-runs/{id}/finish`
    pub async fn finish_heartbeat_run(&self, id: &str, body: &Value) -> Resp {
        self.post(&format!("/api/heartbeat-runs/{id}/finish"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/activity?{query}`
    pub async fn activity(&self, company: &str, query: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/activity?{query}"))
            .await
    }

    /// `POST /api/companies/{companyId}/routines`
    pub async fn create_routine(&self, company: &str, body: &Value) -> Resp {
        self.post(&format!("/api/companies/{company}/routines"), body)
            .await
    }

    /// `GET /api/companies/{companyId}/routines?{query}`
    pub async fn list_routines(&self, company: &str, query: &str) -> Resp {
        self.get(&format!("/api/companies/{company}/routines?{query}"))
            .await
    }

    /// `GET /api/routines/{routineId}`
    pub async fn get_routine(&self, routine: &str) -> Resp {
        self.get(&format!("/api/routines/{routine}")).await
    }

    /// `PATCH /api/routines/{routineId}`
    pub async fn update_routine(&self, routine: &str, body: &Value) -> Resp {
        self.patch(&format!("/api/routines/{routine}"), body).await
    }

    /// `GET /api/routines/{routineId}/upcoming?{query}`
    pub async fn upcoming(&self, routine: &str, query: &str) -> Resp {
        self.get(&format!("/api/routines/{routine}/upcoming?{query}"))
            .await
    }

    /// `POST /api/routines/{routineId}/triggers`
    pub async fn create_trigger(&self, routine: &str, body: &Value) -> Resp {
        self.post(&format!("/api/routines/{routine}/triggers"), body)
            .await
    }

    /// `PATCH /api/routine-triggers/{triggerId}`
    pub async fn update_trigger(&self, trigger: &str, body: &Value) -> Resp {
        self.patch(&format!("/api/routine-triggers/{trigger}"), body)
            .await
    }

    /// `DELETE /api/routine-triggers/{triggerId}`
    pub async fn delete_trigger(&self, trigger: &str) -> Resp {
        self.send(
            Method::DELETE,
            &format!("/api/routine-triggers/{trigger}"),
            None,
        )
        .await
    }

    /// `POST /api/routine-triggers/{triggerId}/rotate-secret`
    pub async fn rotate_trigger_secret(&self, trigger: &str) -> Resp {
        self.send(
            Method::POST,
            &format!("/api/routine-triggers/{trigger}/rotate-secret"),
            None,
        )
        .await
    }

    /// `POST /api/routine-triggers/{triggerId}/rotate-secret` with a body.
    pub async fn rotate_trigger_secret_with(&self, trigger: &str, body: &Value) -> Resp {
        self.post(
            &format!("/api/routine-triggers/{trigger}/rotate-secret"),
            body,
        )
        .await
    }

    /// `POST /api/routines/{routineId}/run`
    pub async fn run_routine(&self, routine: &str, body: &Value) -> Resp {
        self.post(&format!("/api/routines/{routine}/run"), body)
            .await
    }

    /// `POST /api/routines/{routineId}/backfill`
    pub async fn backfill(&self, routine: &str, body: &Value) -> Resp {
        self.post(&format!("/api/routines/{routine}/backfill"), body)
            .await
    }

    /// `GET /api/routines/{routineId}/runs?{query}`
    pub async fn list_runs(&self, routine: &str, query: &str) -> Resp {
        self.get(&format!("/api/routines/{routine}/runs?{query}"))
            .await
    }

    /// `GET /api/routine-runs/{runId}`
    pub async fn get_run(&self, run: &str) -> Resp {
        self.get(&format!("/api/routine-runs/{run}")).await
    }

    /// `GET /healthz`
    pub async fn healthz(&self) -> Resp {
        self.get("/healthz").await
    }

    /// `GET /readyz`
    pub async fn readyz(&self) -> Resp {
        self.get("/readyz").await
    }

    /// `GET /metrics`
    pub async fn metrics(&self) -> Resp {
        self.get("/metrics").await
    }

    /// `GET /api/openapi.json`
    pub async fn openapi(&self) -> Resp {
        self.get("/api/openapi.json").await
    }
}
