//! A local stand-in for Vertex AI's JobService REST API (CustomJobs only).
//!
//! Speaks the protocol `google-cloud-aiplatform-v1` uses: JSON with camelCase fields, errors as
//! `{"error": {"code", "message", "status", "details"}}`, `POST /v1/{parent}/customJobs`,
//! `GET /v1/{name}`, `GET /v1/{parent}/customJobs?filter=…&pageSize=…&pageToken=…`,
//! `POST /v1/{name}:cancel` and `DELETE /v1/{name}` (a long-running Operation). Jobs come back
//! as Vertex sends them: enums by name (`JOB_STATE_PENDING`), timestamps RFC 3339, int64 fields
//! as the client sent them (strings). Validates what Vertex rejects with 400 (unknown machine
//! type, unknown accelerator enum name, accelerator type without count, an accelerator or a
//! count the machine type does not take, a GPU machine type without its GPUs).
//!
//! Test controls: record of every request, `set_state`/`fail_job`, and injected faults
//! (403/429/503/404/…, optionally after the create was committed, like a lost response).
//! Include it with `mod vertex_standin;` from a test in `operator/tests/`.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The JobService methods the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Create,
    Get,
    List,
    Cancel,
    Delete,
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub route: Option<Route>,
    pub method: String,
    /// Path without the query, e.g. `/v1/projects/p/locations/l/customJobs`.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    pub authorization: Option<String>,
}

/// An error to answer instead of (or, with `after_commit`, after) the real handling.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Which method it hits; `None`: the next request of any kind.
    pub route: Option<Route>,
    pub http: u16,
    /// google.rpc.Code name, e.g. `PERMISSION_DENIED`.
    pub status: String,
    pub message: String,
    /// `details` entries (e.g. a google.rpc.ErrorInfo).
    pub details: Vec<Value>,
    /// Perform the request, then answer the error (a response lost on the way back).
    pub after_commit: bool,
}

impl Fault {
    /// A fault with the usual status name and message for `http`.
    pub fn http(route: Route, http: u16) -> Self {
        let (status, message) = match http {
            400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
            401 => (
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ),
            403 => ("PERMISSION_DENIED", "The caller does not have permission"),
            404 => ("NOT_FOUND", "The requested resource was not found."),
            409 => ("ALREADY_EXISTS", "Already exists."),
            429 => (
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for aiplatform.googleapis.com/custom_job_requests.",
            ),
            500 => ("INTERNAL", "Internal error encountered."),
            503 => ("UNAVAILABLE", "The service is currently unavailable."),
            _ => ("UNKNOWN", "Unknown error."),
        };
        Self {
            route: Some(route),
            http,
            status: status.into(),
            message: message.into(),
            details: Vec::new(),
            after_commit: false,
        }
    }

    /// Vertex's 403 for a missing IAM permission, with the ErrorInfo that names it.
    pub fn permission_denied(route: Route, permission: &str, resource: &str) -> Self {
        Self {
            message: format!(
                "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
            ),
            details: vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "aiplatform.googleapis.com",
                "metadata": {"permission": permission, "resource": resource}
            })],
            ..Self::http(route, 403)
        }
    }

    pub fn after_commit(mut self) -> Self {
        self.after_commit = true;
        self
    }
}

#[derive(Default)]
struct Inner {
    /// CustomJobs by numeric id.
    jobs: BTreeMap<u64, Value>,
    next_id: u64,
    next_operation: u64,
    /// Fake clock, seconds: every write advances it, so times are distinct and ordered.
    clock: u64,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
}

impl Inner {
    fn now(&mut self) -> String {
        self.clock += 1;
        let (h, m, s) = (
            self.clock / 3600 % 24,
            self.clock / 60 % 60,
            self.clock % 60,
        );
        format!("2026-01-01T{h:02}:{m:02}:{s:02}Z")
    }

    fn take_fault(&mut self, route: Route) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| f.route.is_none_or(|r| r == route))?;
        self.faults.remove(i)
    }
}

/// A running stand-in on 127.0.0.1; stops when dropped.
pub struct VertexStandIn {
    url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for VertexStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const TERMINAL: [&str; 5] = [
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
];

/// Machine types the stand-in accepts (a subset of Vertex's).
const MACHINE_TYPES: [&str; 27] = [
    "n1-standard-4",
    "n1-standard-8",
    "n1-standard-16",
    "n1-highmem-8",
    "n1-highmem-16",
    "e2-standard-4",
    "g2-standard-4",
    "g2-standard-8",
    "g2-standard-12",
    "g2-standard-16",
    "g2-standard-24",
    "g2-standard-32",
    "g2-standard-48",
    "g2-standard-96",
    "a2-highgpu-1g",
    "a2-highgpu-2g",
    "a2-highgpu-4g",
    "a2-highgpu-8g",
    "a2-megagpu-16g",
    "a2-ultragpu-1g",
    "a2-ultragpu-8g",
    "a3-highgpu-1g",
    "a3-highgpu-2g",
    "a3-highgpu-4g",
    "a3-highgpu-8g",
    "a3-megagpu-8g",
    "a3-ultragpu-8g",
];

/// The accelerators (API names) and counts a machine type takes, as Vertex AI's "Configure
/// compute resources for custom training" lists them: N1 machines attach T4, V100, P100 or P4
/// GPUs; G2, A2 and A3 machines come with a fixed number of one GPU type (in the name for A2
/// and A3). `None`: no GPU can be attached.
fn accelerators_of(machine: &str) -> Option<(&'static [&'static str], Vec<i64>)> {
    const N1: &[&str] = &[
        "NVIDIA_TESLA_T4",
        "NVIDIA_TESLA_V100",
        "NVIDIA_TESLA_P100",
        "NVIDIA_TESLA_P4",
    ];
    let gpus_in_name = |prefix: &str| -> Option<i64> {
        machine
            .strip_prefix(prefix)?
            .strip_suffix('g')?
            .parse()
            .ok()
    };
    if machine.starts_with("n1-") {
        return Some((N1, vec![1, 2, 4, 8]));
    }
    if let Some(vcpus) = machine.strip_prefix("g2-standard-") {
        let count = match vcpus {
            "24" => 2,
            "48" => 4,
            "96" => 8,
            _ => 1,
        };
        return Some((&["NVIDIA_L4"], vec![count]));
    }
    for (prefix, accel) in [
        ("a2-highgpu-", "NVIDIA_TESLA_A100"),
        ("a2-megagpu-", "NVIDIA_TESLA_A100"),
        ("a2-ultragpu-", "NVIDIA_A100_80GB"),
        ("a3-highgpu-", "NVIDIA_H100_80GB"),
        ("a3-megagpu-", "NVIDIA_H100_MEGA_80GB"),
        ("a3-ultragpu-", "NVIDIA_H200_141GB"),
    ] {
        if let Some(n) = gpus_in_name(prefix) {
            let accel: &'static [&'static str] = match accel {
                "NVIDIA_TESLA_A100" => &["NVIDIA_TESLA_A100"],
                "NVIDIA_A100_80GB" => &["NVIDIA_A100_80GB"],
                "NVIDIA_H100_80GB" => &["NVIDIA_H100_80GB"],
                "NVIDIA_H100_MEGA_80GB" => &["NVIDIA_H100_MEGA_80GB"],
                _ => &["NVIDIA_H200_141GB"],
            };
            return Some((accel, vec![n]));
        }
    }
    None
}

/// What Vertex AI answers 400 for in a machine spec: an accelerator the machine type does not
/// take, a count it does not come with, or a GPU machine type without its GPUs.
fn machine_spec_error(i: usize, machine_type: &str, machine: &Value) -> Option<String> {
    let accel = machine["acceleratorType"].as_i64().unwrap_or(0);
    let count = machine["acceleratorCount"].as_i64().unwrap_or(0);
    let fixed = !machine_type.starts_with("n1-");
    match (accelerators_of(machine_type), accel) {
        (None, 0) => None,
        (None, _) => Some(format!(
            "worker_pool_specs[{i}]: machine type \"{machine_type}\" does not support accelerators."
        )),
        (Some((_, _)), 0) if fixed => Some(format!(
            "worker_pool_specs[{i}]: machine type \"{machine_type}\" requires its accelerators in machine_spec.accelerator_type and accelerator_count."
        )),
        (Some(_), 0) => None,
        (Some((types, counts)), n) => {
            use google_cloud_aiplatform_v1::model::AcceleratorType;
            let name = AcceleratorType::from(n as i32)
                .name()
                .unwrap_or("UNKNOWN")
                .to_string();
            if !types.contains(&name.as_str()) {
                Some(format!(
                    "worker_pool_specs[{i}]: accelerator type \"{name}\" is not supported for machine type \"{machine_type}\"."
                ))
            } else if !counts.contains(&count) {
                Some(format!(
                    "worker_pool_specs[{i}]: accelerator count {count} is not supported for machine type \"{machine_type}\" and accelerator type \"{name}\"."
                ))
            } else {
                None
            }
        }
    }
}

impl VertexStandIn {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1000,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Vertex stand-in");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, server }
    }

    /// `http://127.0.0.1:<port>`: the endpoint to give the client.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, route: Route) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.route == Some(route))
            .cloned()
            .collect()
    }

    /// Bodies of every create request, in order.
    pub fn create_bodies(&self) -> Vec<Value> {
        self.requests_to(Route::Create)
            .into_iter()
            .filter_map(|r| r.body)
            .collect()
    }

    /// Stored CustomJobs, oldest first.
    pub fn jobs(&self) -> Vec<Value> {
        self.lock().jobs.values().cloned().collect()
    }

    pub fn job(&self, name: &str) -> Option<Value> {
        let id = id_of(name)?;
        self.lock().jobs.get(&id).cloned()
    }

    /// Adds a job as if created elsewhere; returns its name.
    pub fn insert_job(&self, project: &str, location: &str, mut job: Value) -> String {
        let mut g = self.lock();
        g.next_id += 1;
        let id = g.next_id;
        let name = format!("projects/{project}/locations/{location}/customJobs/{id}");
        job["name"] = json!(name);
        if job.get("state").is_none() {
            job["state"] = json!("JOB_STATE_PENDING");
        }
        g.jobs.insert(id, job);
        name
    }

    /// Moves a job to `state` (e.g. `JOB_STATE_RUNNING`), stamping start/end times as Vertex does.
    pub fn set_state(&self, name: &str, state: &str) {
        let id = id_of(name).expect("a CustomJob name");
        let mut g = self.lock();
        let now = g.now();
        let job = g.jobs.get_mut(&id).expect("no such job in the stand-in");
        job["state"] = json!(state);
        job["updateTime"] = json!(now);
        if state == "JOB_STATE_RUNNING" && job.get("startTime").is_none() {
            job["startTime"] = json!(now);
        }
        if TERMINAL.contains(&state) {
            job["endTime"] = json!(now);
        }
    }

    /// Fails a job with Vertex's error status.
    pub fn fail_job(&self, name: &str, message: &str) {
        self.fail_job_with(name, 3, message);
    }

    /// Fails the CustomJob with `error` = a google.rpc.Status of `code` (8
    /// RESOURCE_EXHAUSTED, 13 INTERNAL, 14 UNAVAILABLE, 3 INVALID_ARGUMENT, ...).
    pub fn fail_job_with(&self, name: &str, code: i32, message: &str) {
        self.set_state(name, "JOB_STATE_FAILED");
        let id = id_of(name).expect("a CustomJob name");
        let mut g = self.lock();
        if let Some(job) = g.jobs.get_mut(&id) {
            job["error"] = json!({"code": code, "message": message});
        }
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// The next `times` requests to `route` fail with `http`.
    pub fn fail_next(&self, route: Route, http: u16, times: usize) {
        for _ in 0..times {
            self.inject(Fault::http(route, http));
        }
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }
}

fn id_of(name: &str) -> Option<u64> {
    name.rsplit('/').next()?.parse().ok()
}

fn error_response(http: u16, status: &str, message: &str, details: &[Value]) -> Response {
    let mut error = json!({"code": http, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = json!(details);
    }
    json_response(
        StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({ "error": error }),
    )
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// `application/x-www-form-urlencoded` query decoding (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Parses `labels.k="v" AND labels.k2=v2` into (key, value) pairs.
fn parse_filter(filter: &str) -> Option<Vec<(String, String)>> {
    if filter.trim().is_empty() {
        return Some(Vec::new());
    }
    filter
        .split(" AND ")
        .map(|term| {
            let (k, v) = term.trim().split_once('=')?;
            let key = k.trim().strip_prefix("labels.")?;
            let v = v.trim();
            let value = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                return error_response(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. {e}"),
                    &[],
                );
            }
        }
    };
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    let method = parts.method.clone();

    // /v1/projects/{p}/locations/{l}/customJobs[/{id}[:cancel]]
    let rest = path.strip_prefix("/v1/").unwrap_or("");
    let (rest, verb) = match rest.rsplit_once(':') {
        Some((r, v)) if !v.contains('/') => (r, Some(v)),
        _ => (rest, None),
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let route = match (&method, segs.as_slice(), verb) {
        (&Method::POST, ["projects", _, "locations", _, "customJobs"], None) => Some(Route::Create),
        (&Method::GET, ["projects", _, "locations", _, "customJobs"], None) => Some(Route::List),
        (&Method::GET, ["projects", _, "locations", _, "customJobs", _], None) => Some(Route::Get),
        (&Method::POST, ["projects", _, "locations", _, "customJobs", _], Some("cancel")) => {
            Some(Route::Cancel)
        }
        (&Method::DELETE, ["projects", _, "locations", _, "customJobs", _], None) => {
            Some(Route::Delete)
        }
        _ => None,
    };

    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    g.requests.push(Recorded {
        route,
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let Some(route) = route else {
        return error_response(
            501,
            "UNIMPLEMENTED",
            &format!("{method} {path} is not served by the Vertex stand-in"),
            &[],
        );
    };
    let fault = g.take_fault(route);
    if let Some(f) = &fault
        && !f.after_commit
    {
        return error_response(f.http, &f.status, &f.message, &f.details);
    }
    let parent = format!("{}/{}/{}/{}", segs[0], segs[1], segs[2], segs[3]);
    let id = segs.get(5).and_then(|s| s.parse::<u64>().ok());
    let name = rest.to_string();

    let response = match route {
        Route::Create => create(&mut g, &parent, body),
        Route::List => list(&g, &query),
        Route::Get => match id.and_then(|id| g.jobs.get(&id)) {
            Some(job) => json_response(StatusCode::OK, job.clone()),
            None => not_found(&name),
        },
        Route::Cancel => {
            let now = g.now();
            match id.and_then(|id| g.jobs.get_mut(&id)) {
                None => not_found(&name),
                Some(job) => {
                    let state = job["state"].as_str().unwrap_or("").to_string();
                    if TERMINAL.contains(&state.as_str()) {
                        error_response(
                            400,
                            "FAILED_PRECONDITION",
                            &format!(
                                "Cannot cancel CustomJob \"{name}\" because it is in state {state}."
                            ),
                            &[],
                        )
                    } else {
                        job["state"] = json!("JOB_STATE_CANCELLING");
                        job["updateTime"] = json!(now);
                        json_response(StatusCode::OK, json!({}))
                    }
                }
            }
        }
        Route::Delete => {
            let state = id
                .and_then(|id| g.jobs.get(&id))
                .map(|j| j["state"].as_str().unwrap_or("").to_string());
            match state {
                None => not_found(&name),
                Some(state) if !TERMINAL.contains(&state.as_str()) => error_response(
                    400,
                    "FAILED_PRECONDITION",
                    &format!(
                        "CustomJob \"{name}\" is in state {state}; cancel it before deleting it."
                    ),
                    &[],
                ),
                Some(_) => {
                    if let Some(id) = id {
                        g.jobs.remove(&id);
                    }
                    g.next_operation += 1;
                    let now = g.now();
                    json_response(
                        StatusCode::OK,
                        json!({
                            "name": format!("{name}/operations/{}", g.next_operation),
                            "metadata": {
                                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata",
                                "genericMetadata": {"createTime": now, "updateTime": now}
                            },
                            "done": true,
                            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}
                        }),
                    )
                }
            }
        }
    };
    match fault {
        Some(f) => error_response(f.http, &f.status, &f.message, &f.details),
        None => response,
    }
}

fn not_found(name: &str) -> Response {
    error_response(
        404,
        "NOT_FOUND",
        &format!("The CustomJob \"{name}\" does not exist."),
        &[],
    )
}

fn invalid(message: String) -> Response {
    error_response(400, "INVALID_ARGUMENT", &message, &[])
}

fn create(g: &mut Inner, parent: &str, body: Option<Value>) -> Response {
    let Some(Value::Object(mut job)) = body else {
        return invalid("CustomJob is required.".into());
    };
    if job
        .get("displayName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return invalid("CustomJob.display_name must be set.".into());
    }
    let pools = job
        .get("jobSpec")
        .and_then(|s| s.get("workerPoolSpecs"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pools.is_empty() {
        return invalid("CustomJob.job_spec.worker_pool_specs must be set.".into());
    }
    for (i, pool) in pools.iter().enumerate() {
        let machine = &pool["machineSpec"];
        let machine_type = machine["machineType"].as_str().unwrap_or("");
        if !MACHINE_TYPES.contains(&machine_type) {
            return invalid(format!("Machine type \"{machine_type}\" is not supported."));
        }
        match &machine["acceleratorType"] {
            Value::String(s) if !s.is_empty() => {
                // Protobuf JSON parsing rejects enum names it does not know.
                return invalid(format!(
                    "Invalid value at 'custom_job.job_spec.worker_pool_specs[{i}].machine_spec.accelerator_type' (type.googleapis.com/google.cloud.aiplatform.v1.AcceleratorType), \"{s}\""
                ));
            }
            Value::Number(n)
                if n.as_i64() != Some(0)
                    && machine["acceleratorCount"].as_i64().unwrap_or(0) <= 0 =>
            {
                return invalid(format!(
                    "worker_pool_specs[{i}].machine_spec.accelerator_count must be positive when accelerator_type is set."
                ));
            }
            _ => {}
        }
        if let Some(message) = machine_spec_error(i, machine_type, machine) {
            return invalid(message);
        }
        if pool
            .get("containerSpec")
            .and_then(|c| c.get("imageUri"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return invalid(format!(
                "worker_pool_specs[{i}].container_spec.image_uri must be set."
            ));
        }
    }
    g.next_id += 1;
    let id = g.next_id;
    let now = g.now();
    let name = format!("{parent}/customJobs/{id}");
    job.insert("name".into(), json!(name));
    job.insert("state".into(), json!("JOB_STATE_PENDING"));
    job.insert("createTime".into(), json!(now));
    job.insert("updateTime".into(), json!(now));
    let job = Value::Object(job);
    g.jobs.insert(id, job.clone());
    json_response(StatusCode::OK, job)
}

fn list(g: &Inner, query: &BTreeMap<String, String>) -> Response {
    let filter = query.get("filter").map(String::as_str).unwrap_or("");
    let Some(terms) = parse_filter(filter) else {
        return invalid(format!("Unsupported filter: {filter}"));
    };
    let page_size = query
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100);
    let offset = match query.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(t) => match t.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return invalid(format!("Invalid page token: {t}")),
        },
    };
    let matching: Vec<&Value> = g
        .jobs
        .values()
        .filter(|j| {
            terms
                .iter()
                .all(|(k, v)| j["labels"][k.as_str()].as_str() == Some(v.as_str()))
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|j| (*j).clone())
        .collect();
    let mut out = serde_json::Map::new();
    // proto3 JSON leaves out empty repeated fields and empty strings.
    if !page.is_empty() {
        out.insert("customJobs".into(), json!(page));
    }
    if offset + page_size < matching.len() {
        out.insert(
            "nextPageToken".into(),
            json!((offset + page_size).to_string()),
        );
    }
    json_response(StatusCode::OK, Value::Object(out))
}
