//! The edge's connections to the core: a small pool of HTTP/2 channels. Each WebSocket gets
//! its own gRPC stream, multiplexed over one channel picked round-robin, so streams do not
//! all contend on a single connection's lock under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_proto::pb::chat::chat_service_client::ChatServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

pub struct Upstream {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Upstream {
    /// Channels connect lazily, so the edge starts even while the core is still starting.
    pub fn new(core_url: &str, size: usize) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(core_url.to_string())
            .map_err(|e| format!("core_url {core_url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channels = (0..size.max(1)).map(|_| endpoint.connect_lazy()).collect();
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }
}
