//! A Twilio-style SMS API for tests: an axum server on a random port that records every
//! request (method, path, basic auth, form) and answers 201 as the real API does.

use std::collections::HashMap;

use axum::extract::{Form, OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use crate::WAIT;

/// One request the SMS sink received.
#[derive(Debug)]
pub struct SmsRequest {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
    pub form: HashMap<String, String>,
}

/// A Twilio-style SMS API in the test: records every request and answers 201.
pub struct SmsSink {
    pub base_url: String,
    received: mpsc::UnboundedReceiver<SmsRequest>,
}

impl SmsSink {
    pub async fn start() -> Self {
        async fn record(
            State(tx): State<mpsc::UnboundedSender<SmsRequest>>,
            method: Method,
            OriginalUri(uri): OriginalUri,
            headers: HeaderMap,
            Form(form): Form<HashMap<String, String>>,
        ) -> (StatusCode, axum::Json<serde_json::Value>) {
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = tx.send(SmsRequest {
                method,
                path: uri.path().to_string(),
                authorization,
                form,
            });
            (
                StatusCode::CREATED,
                axum::Json(json!({"sid": "SM0001", "status": "queued"})),
            )
        }
        let (tx, received) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(record).with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sms sink");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("http://{addr}"),
            received,
        }
    }

    /// A request already received and not yet taken, if any (no waiting).
    pub fn try_next(&mut self) -> Option<SmsRequest> {
        self.received.try_recv().ok()
    }

    pub async fn next(&mut self) -> SmsRequest {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("an SMS request in time")
            .expect("sink open")
    }
}
