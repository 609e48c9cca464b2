//! `chatctl health`: asks the core's standard `grpc.health.v1` service (no token needed).
//! Prints the status; exits 0 only when it is SERVING.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Context;
use crate::client::{self, CliError, exit};

#[derive(clap::Args)]
pub struct Args {
    /// A service name (`chat.v1.ChatService`, ...); empty asks about the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

pub async fn run(args: Args, cx: &Context) -> anyhow::Result<()> {
    let channel = cx.core.channel().await?;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: args.service.clone(),
        }),
    )
    .await
    .map_err(|_| {
        CliError::new(
            exit::UNREACHABLE,
            format!("the core at {} did not answer within 5 s", cx.core.url),
        )
    })?
    .map_err(|s| client::failure(&cx.core.url, "checking health", &s))?
    .into_inner();
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    let name = status.as_str_name();
    if cx.json {
        crate::output::print_json(&serde_json::json!({"status": name, "core": cx.core.url}));
    } else {
        println!("{name} ({})", cx.core.url);
    }
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(CliError::new(exit::NOT_SERVING, format!("the core reports {name}")).into())
    }
}
