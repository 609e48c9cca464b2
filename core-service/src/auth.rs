//! Authentication of gRPC calls: every call carries `authorization: Bearer <jwt>` metadata,
//! validated here by the same [`Verifier`] the edge uses.

use chat_auth::{AuthError, Principal, Verifier};
use tonic::metadata::MetadataMap;

/// The caller of a gRPC call, or `UNAUTHENTICATED` ("Authentication failed", never the cause).
pub fn authenticate(
    verifier: &Verifier,
    metadata: &MetadataMap,
) -> Result<Principal, tonic::Status> {
    let token = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(chat_auth::bearer)
        .ok_or(AuthError::Missing);
    token.and_then(|t| verifier.verify(t)).map_err(|err| {
        tracing::info!(reason = %err, "authentication failed");
        tonic::Status::unauthenticated("Authentication failed")
    })
}

/// An admin caller, or `PERMISSION_DENIED`.
pub fn authenticate_admin(
    verifier: &Verifier,
    metadata: &MetadataMap,
) -> Result<Principal, tonic::Status> {
    let who = authenticate(verifier, metadata)?;
    if who.is_admin() {
        Ok(who)
    } else {
        Err(tonic::Status::permission_denied("Admin role required"))
    }
}
