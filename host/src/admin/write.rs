//! The admin API's write calls: upload, deploy, traffic, rollback, delete.
//! Each answers JSON: what changed, or `{"error": ...}` with the status the
//! refusal calls for; a refused call changes nothing.

use futures::StreamExt as _;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, BodyStream, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{error, json};
use crate::body::HostBody;
use crate::deploy::state::{RevisionName, Traffic};
use crate::deploy::{DeployError, Deployments, Done};
use crate::manifest::FunctionName;

/// The largest definition, traffic or rollback body.
const MAX_SMALL_BODY: usize = 1 << 20;

/// `POST /v1/components`: stores and checks a component.
pub(super) async fn upload(
    deployments: &Deployments,
    request: Request<Incoming>,
) -> Response<HostBody> {
    let limit = deployments.max_upload();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return refused(&DeployError::Upload(
            crate::deploy::blobs::UploadError::TooLarge(limit),
        ));
    }
    let body = BodyStream::new(request.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(error) => Some(Err(error)),
        }
    });
    match deployments.upload(Box::pin(body)).await {
        Ok(uploaded) => {
            let stored = uploaded.stored;
            tracing::info!(component = %stored.digest, size = stored.size, existed = stored.existed, "component uploaded");
            json(
                if stored.existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                &serde_json::json!({
                    "component": stored.digest.to_string(),
                    "size": stored.size,
                    "stored": if stored.existed { "existing" } else { "new" },
                }),
            )
        }
        Err(refusal) => refused(&refusal),
    }
}

/// `PUT /v1/functions/NAME`: deploys a definition as a new revision.
pub(super) async fn deploy(
    deployments: &Deployments,
    name: &FunctionName,
    request: Request<Incoming>,
) -> Response<HostBody> {
    let definition = match small_body(request).await {
        Ok(body) => match String::from_utf8(body) {
            Ok(text) => text,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the definition is not UTF-8 text"),
        },
        Err(response) => return response,
    };
    answer(
        name,
        StatusCode::CREATED,
        deployments.deploy(name, definition).await,
        deployments,
    )
}

/// `PUT /v1/functions/NAME/traffic`: `{"split": {REVISION: PERCENT, ...},
/// "pins": [{"header", "value", "revision"}, ...]}`.
pub(super) async fn traffic(
    deployments: &Deployments,
    name: &FunctionName,
    request: Request<Incoming>,
) -> Response<HostBody> {
    let traffic: Traffic = match json_body(request).await {
        Ok(traffic) => traffic,
        Err(response) => return response,
    };
    answer(
        name,
        StatusCode::OK,
        deployments.set_traffic(name, traffic).await,
        deployments,
    )
}

/// What `POST /v1/functions/NAME/rollback` may say: the revision to go to.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rollback {
    revision: Option<RevisionName>,
}

/// `POST /v1/functions/NAME/rollback`: all traffic to the revision named,
/// or to the one before the current.
pub(super) async fn roll_back(
    deployments: &Deployments,
    name: &FunctionName,
    request: Request<Incoming>,
) -> Response<HostBody> {
    let body = match small_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let rollback = if body.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(rollback) => rollback,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not valid: {e}"),
                );
            }
        }
    };
    answer(
        name,
        StatusCode::OK,
        deployments.roll_back(name, rollback.revision).await,
        deployments,
    )
}

/// `DELETE /v1/functions/NAME`.
pub(super) async fn delete(deployments: &Deployments, name: &FunctionName) -> Response<HostBody> {
    match deployments.delete(name).await {
        Ok(done) => {
            tracing::info!(function = %name, "{}", done.applied);
            json(
                StatusCode::OK,
                &serde_json::json!({ "function": name.to_string(), "deleted": true }),
            )
        }
        Err(refusal) => refused(&refusal),
    }
}

/// The answer to a deploy, traffic change or rollback of function `name`:
/// its revision and traffic now.
fn answer(
    name: &FunctionName,
    status: StatusCode,
    done: Result<Done, DeployError>,
    deployments: &Deployments,
) -> Response<HostBody> {
    match done {
        Ok(done) => {
            tracing::info!(function = %name, revision = ?done.revision.as_ref().map(ToString::to_string), "{}", done.applied);
            let state = deployments.state();
            let traffic = state.functions.get(name).map(|f| f.traffic.clone());
            json(
                status,
                &serde_json::json!({
                    "function": name.to_string(),
                    "revision": done.revision.map(|r| r.to_string()),
                    "traffic": traffic,
                    "change": done.applied.to_string(),
                }),
            )
        }
        Err(refusal) => refused(&refusal),
    }
}

fn refused(refusal: &DeployError) -> Response<HostBody> {
    tracing::warn!(error = %refusal, "admin call refused");
    error(refusal.status(), &refusal.to_string())
}

/// A request body of at most [`MAX_SMALL_BODY`] bytes.
async fn small_body(request: Request<Incoming>) -> Result<Vec<u8>, Response<HostBody>> {
    match Limited::new(request.into_body(), MAX_SMALL_BODY)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes().to_vec()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {MAX_SMALL_BODY} bytes, or broke off"),
        )),
    }
}

/// A small JSON request body.
async fn json_body<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
) -> Result<T, Response<HostBody>> {
    let body = small_body(request).await?;
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not valid: {e}"),
        )
    })
}
