//! ApiVersions: the API keys and versions this listener serves, and nothing more (a client picks
//! the highest version both sides know). A request of a version newer than this node knows is
//! answered at version 0 with `UNSUPPORTED_VERSION` and the list, so the client retries with a
//! version it finds there, as Kafka brokers do.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::Decodable;

use super::respond;

/// `UNSUPPORTED_VERSION`.
const UNSUPPORTED_VERSION: i16 = 35;

/// The keys served, with the versions this node answers.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
];

/// Whether `api` at `version` is served.
pub fn served(api: ApiKey, version: i16) -> bool {
    SERVED
        .iter()
        .any(|(k, min, max)| *k == api && (*min..=*max).contains(&version))
}

/// The framed answer to an ApiVersions request (`frame` holds header and body).
pub fn answer(frame: &mut Bytes, version: i16) -> anyhow::Result<Bytes> {
    let known = served(ApiKey::ApiVersions, version);
    // An unknown version's header may not decode as this node reads it; the correlation id is
    // where every header version has it.
    let at = if known { version } else { 0 };
    let correlation_id = if known {
        RequestHeader::decode(frame, ApiKey::ApiVersions.request_header_version(version))?
            .correlation_id
    } else {
        i32::from_be_bytes(frame.get(4..8).unwrap_or(&[0; 4]).try_into()?)
    };
    let mut body = ApiVersionsResponse::default();
    body.error_code = if known { 0 } else { UNSUPPORTED_VERSION };
    body.api_keys = SERVED
        .iter()
        .map(|(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    respond(ApiKey::ApiVersions, at, correlation_id, &body)
}
