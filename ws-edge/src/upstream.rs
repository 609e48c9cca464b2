//! The edge's connections to the core: a small pool of HTTP/2 channels. Each WebSocket gets
//! its own gRPC stream, multiplexed over one channel picked round-robin, so streams do not
//! all contend on a single connection's lock under load. Every call carries the caller's own
//! token ([`with_token`]): the core authenticates it again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_proto::pb::admin::admin_service_client::AdminServiceClient;
use chat_proto::pb::chat::chat_service_client::ChatServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

pub struct Upstream {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Upstream {
    /// `size` channels (at least one) to `endpoint`. They connect lazily, so the edge starts
    /// even while the core is still starting.
    pub fn new(endpoint: Endpoint, size: usize) -> Self {
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channels = (0..size.max(1)).map(|_| endpoint.connect_lazy()).collect();
        Self {
            channels,
            next: AtomicUsize::new(0),
        }
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }
}

/// A request carrying `authorization: Bearer <token>`; `None` when the token cannot be a
/// header value (control characters), which no valid token contains.
pub fn with_token<T>(message: T, token: &str) -> Option<tonic::Request<T>> {
    let value = format!("Bearer {token}").parse().ok()?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Some(request)
}
