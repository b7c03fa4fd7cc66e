//! Answers in the API server's own shapes: JSON bodies and `Status` objects for every failure.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::store::ResourceType;
use super::Body;

pub(super) fn json_body(code: StatusCode, v: &Value) -> Response<Body> {
    answer(code, "application/json", v.to_string())
}

fn answer(code: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Plain text, as the API server's health endpoints answer.
pub(super) fn text(code: StatusCode, body: &str) -> Response<Body> {
    answer(code, "text/plain; charset=utf-8", body.to_string())
}

pub(super) fn ok(v: Value) -> Response<Body> {
    json_body(StatusCode::OK, &v)
}

pub(super) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    status_with(code, reason, message, Value::Null)
}

/// A `Status` object as the API server writes it: kubectl and kube-rs read `reason`, `code` and `message`.
pub(super) fn status_object(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code.as_u16()})
}

pub(super) fn status_with(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Value,
) -> Response<Body> {
    let mut v = status_object(code, reason, message);
    if !details.is_null() {
        v["details"] = details;
    }
    json_body(code, &v)
}

pub(super) fn not_found(message: &str) -> Response<Body> {
    status(StatusCode::NOT_FOUND, "NotFound", message)
}

pub(super) fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// `422 Invalid`, as the API server refuses parameters its validation rejects.
pub(super) fn invalid(message: &str) -> Response<Body> {
    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

/// The event a watch gets when its `resourceVersion` was compacted away.
pub(super) fn expired_event(rv: u64, now: u64) -> Value {
    let message = format!("too old resource version: {rv} ({now})");
    json!({"type": "ERROR", "object": status_object(StatusCode::GONE, "Expired", &message)})
}

/// `404` for one object, worded as the API server words it.
pub(super) fn object_not_found(rt: &ResourceType, name: &str) -> Response<Body> {
    let message = format!("{} \"{name}\" not found", rt.qualified());
    status_with(
        StatusCode::NOT_FOUND,
        "NotFound",
        &message,
        rt.details(name),
    )
}
