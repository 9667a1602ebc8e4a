//! The HTTP/1.1 server: API routing, discovery, OpenAPI, Table output, chunked watches,
//! and `/standin` control endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::admission::FieldValidation;
use crate::error::ApiError;
use crate::kubelet::{ContainerExit, Disruption, Kubelet, Outcome};
use crate::openapi;
use crate::patch::{self, PatchType};
use crate::resources::{Registry, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::stats::{RequestRecord, Stats};
use crate::store::{DeleteOpts, ListOpts, Part, Store, WatchPoll, WriteOpts, Written};
use crate::table;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Largest accepted request body (the real server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub kubelet: Kubelet,
    pub bookmark_interval: Duration,
    pub addr: SocketAddr,
    pub faults: crate::faults::Faults,
}

/// A response body fed by a channel: one chunk per watch event.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    typed_json_response(code, "application/json", value)
}

fn typed_json_response(code: u16, content_type: &str, value: &Value) -> Response<Body> {
    bytes_response(
        code,
        content_type,
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// `Warning: 299 - "<text>"` headers, as the API server sends admission warnings.
fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn text_response(text: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Accepts connections until `shutdown` fires; open connections are then aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        }
    }
    connections.shutdown().await;
}

struct Ctx {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    raw_query: String,
    content_type: String,
    accept: String,
    body: Bytes,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        patch::parse_body(&self.body, self.content_type.contains("yaml"))
    }

    fn write_opts(&self) -> Result<WriteOpts, ApiError> {
        Ok(WriteOpts {
            dry_run: self.q("dryRun").is_some_and(|v| !v.is_empty()),
            field_manager: self.q("fieldManager").map(str::to_string),
            field_validation: FieldValidation::parse(self.q("fieldValidation"))?,
            origin: Default::default(),
        })
    }

    fn metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }

    fn table(&self) -> Option<table::Include> {
        table::requested(&self.accept).then(|| table::Include::parse(self.q("includeObject")))
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(&ApiError::too_large()),
    };
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let header = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ctx = Ctx {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        body,
    };
    if ctx.path.starts_with("/standin") {
        return control(&shared, &ctx);
    }
    let mut record = RequestRecord {
        seq: 0,
        method: ctx.method.to_string(),
        path: ctx.path.clone(),
        query: ctx.raw_query.clone(),
        verb: String::new(),
        resource: String::new(),
        namespace: String::new(),
        name: String::new(),
        code: 0,
        user_agent: header(header::USER_AGENT),
    };
    let response = match route(&shared, &ctx, &mut record).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(method = %ctx.method, path = %ctx.path, error = %e, "request failed");
            error_response(&e)
        }
    };
    record.code = response.status().as_u16();
    if record.verb.is_empty() {
        record.verb = ctx.method.as_str().to_lowercase();
    }
    tracing::trace!(verb = %record.verb, resource = %record.resource, code = record.code, "request");
    shared.stats.record(record);
    response
}

/// An API path resolved to a served resource.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    part: Part,
}

fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": crate::openapi::GIT_VERSION,
        "gitCommit": "standin",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

async fn route(
    shared: &Shared,
    ctx: &Ctx,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    let reg = shared.store.served();
    let reg: &Registry = &reg;
    let aggregated = aggregated_discovery(&ctx.accept);
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(json_response(200, &version_doc())),
        ["healthz" | "livez" | "readyz"] => return Ok(text_response("ok")),
        ["api"] if aggregated.is_some() => {
            let (doc, content_type) = discovery_list(reg, true, aggregated);
            return Ok(typed_json_response(200, &content_type, &doc));
        }
        ["api"] => {
            return Ok(json_response(
                200,
                &reg.api_versions(&shared.addr.to_string()),
            ));
        }
        ["apis"] if aggregated.is_some() => {
            let (doc, content_type) = discovery_list(reg, false, aggregated);
            return Ok(typed_json_response(200, &content_type, &doc));
        }
        ["apis"] => return Ok(json_response(200, &reg.api_group_list())),
        ["openapi", "v2"] => return openapi_v2(reg, ctx),
        ["openapi", "v3"] => return Ok(json_response(200, &openapi::v3_index(reg))),
        ["openapi", "v3", "api", "v1"] => return openapi_v3(reg, "", "v1", ctx),
        ["openapi", "v3", "apis", g, v] => return openapi_v3(reg, g, v, ctx),
        ["apis", g] => {
            return reg
                .api_group_doc(g)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::path_not_found(&ctx.path));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if reg.has_group_version(g, v) => (g, v, rest),
        _ => return Err(ApiError::path_not_found(&ctx.path)),
    };
    if rest.is_empty() {
        return Ok(json_response(200, &reg.api_resource_list(group, version)));
    }
    let not_found = || ApiError::path_not_found(&ctx.path);
    let (namespace, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if reg
                .find(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some(ns.to_string()), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(not_found()),
    };
    let rt = reg
        .find(group, version, plural)
        .cloned()
        .ok_or_else(not_found)?;
    let (name, part) = match tail {
        [] => (None, Part::Main),
        [name] => (Some(name.to_string()), Part::Main),
        [name, "status"] if rt.status_subresource => (Some(name.to_string()), Part::Status),
        _ => return Err(not_found()),
    };
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    record.resource = format!(
        "{}{}",
        rt.qualified(),
        if part == Part::Status { "/status" } else { "" }
    );
    record.namespace = namespace.clone().unwrap_or_default();
    record.name = name.clone().unwrap_or_default();
    let target = Target {
        rt,
        namespace,
        name,
        part,
    };
    dispatch(shared, ctx, target, record).await
}

/// The aggregated discovery version a client accepts (`v2` preferred over `v2beta1`).
fn aggregated_discovery(accept: &str) -> Option<&'static str> {
    let offers: Vec<&str> = accept
        .split(',')
        .filter(|a| a.contains("g=apidiscovery.k8s.io") && a.contains("as=APIGroupDiscoveryList"))
        .collect();
    if offers
        .iter()
        .any(|a| a.split(';').any(|p| p.trim() == "v=v2"))
    {
        Some("v2")
    } else if offers
        .iter()
        .any(|a| a.split(';').any(|p| p.trim() == "v=v2beta1"))
    {
        Some("v2beta1")
    } else {
        None
    }
}

/// An aggregated discovery document and its content type, which tells clients it is one.
fn discovery_list(reg: &Registry, core: bool, version: Option<&str>) -> (Value, String) {
    let version = version.unwrap_or("v2");
    let mut doc = reg.aggregated(core);
    doc["apiVersion"] = json!(format!("apidiscovery.k8s.io/{version}"));
    (
        doc,
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
    )
}

/// `/openapi/v2`: protobuf, as kubectl asks for it.
fn openapi_v2(reg: &Registry, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    if !ctx.accept.contains("protobuf") {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "the stand-in serves /openapi/v2 as application/com.github.proto-openapi.spec.v2@v1.0+protobuf only; /openapi/v3 is JSON",
        ));
    }
    Ok(bytes_response(
        200,
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        openapi::v2::encode(reg),
    ))
}

/// `/openapi/v3/apis/<group>/<version>` (any `hash`: the document is always current).
fn openapi_v3(
    reg: &Registry,
    group: &str,
    version: &str,
    ctx: &Ctx,
) -> Result<Response<Body>, ApiError> {
    openapi::v3_document(reg, group, version)
        .map(|doc| json_response(200, &doc))
        .ok_or_else(|| ApiError::path_not_found(&ctx.path))
}

fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn selectors(rt: &ResourceType, ctx: &Ctx) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(rt, ctx.q("fieldSelector").unwrap_or_default())?,
    })
}

async fn dispatch(
    shared: &Shared,
    ctx: &Ctx,
    t: Target,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ApiError> {
    let store = &shared.store;
    let ns = t.namespace.as_deref().unwrap_or_default();
    let rt = &t.rt;
    if matches!(ctx.method, Method::POST | Method::PUT | Method::PATCH) {
        // A held write waits here, on its own connection's task: other requests go on.
        shared.faults.check(&rt.plural, ns).await?;
    }
    let ok = |v: Value| {
        let v = match ctx.table() {
            Some(include) => {
                let rv = v
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table::table(rt, &[v], json!({"resourceVersion": rv}), include)
            }
            None if ctx.metadata_only() => partial(&v),
            None => v,
        };
        Ok(json_response(200, &v))
    };
    let written =
        |code: u16, w: Written| Ok(with_warnings(json_response(code, &w.object), &w.warnings));
    let verb = |r: &mut RequestRecord, v: &str| r.verb = v.to_string();
    match (&ctx.method, t.name.as_deref()) {
        (&Method::GET, None) if ctx.flag("watch") => {
            verb(record, "watch");
            watch(shared, ctx, &t)
        }
        (&Method::GET, None) => {
            verb(record, "list");
            let opts = ListOpts {
                selectors: selectors(rt, ctx)?,
                limit: ctx.q("limit").and_then(|l| l.parse().ok()),
                continue_token: ctx
                    .q("continue")
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
                resource_version: ctx.q("resourceVersion").map(str::to_string),
                exact: ctx.q("resourceVersionMatch") == Some("Exact"),
            };
            let mut list = store.list(rt, t.namespace.as_deref(), &opts)?;
            if let Some(include) = ctx.table() {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(json_response(
                    200,
                    &table::table(rt, &items, list["metadata"].clone(), include),
                ));
            }
            if ctx.metadata_only() {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .map(|a| a.iter().map(partial).collect())
                    .unwrap_or_default();
                list["items"] = json!(items);
                list["kind"] = json!("PartialObjectMetadataList");
                list["apiVersion"] = json!("meta.k8s.io/v1");
            }
            Ok(json_response(200, &list))
        }
        (&Method::GET, Some(name)) => {
            verb(record, "get");
            ok(store.get(rt, ns, name)?)
        }
        (&Method::POST, None) => {
            verb(record, "create");
            if rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({})",
                    ctx.path
                )));
            }
            let created = store.create(rt, ns, ctx.json_body()?, &ctx.write_opts()?)?;
            written(201, created)
        }
        (&Method::PUT, Some(name)) => {
            verb(record, "update");
            let replaced =
                store.replace(rt, ns, name, ctx.json_body()?, t.part, &ctx.write_opts()?)?;
            written(200, replaced)
        }
        (&Method::PATCH, Some(name)) => {
            verb(record, "patch");
            let ptype = PatchType::from_content_type(&ctx.content_type)?;
            let body = patch::parse_body(&ctx.body, ptype == PatchType::Apply)?;
            let existed = store.get(rt, ns, name).is_ok();
            let out = store.patch(
                rt,
                ns,
                name,
                ptype,
                body,
                t.part,
                &ctx.write_opts()?,
                ctx.flag("force"),
            )?;
            written(if existed { 200 } else { 201 }, out)
        }
        (&Method::DELETE, Some(name)) => {
            verb(record, "delete");
            let opts = DeleteOpts::from_body(&ctx.json_body()?)?;
            let mut opts = opts;
            if let Some(g) = ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
                opts.grace_period_seconds = Some(g);
            }
            if let Some(p) = ctx.q("propagationPolicy") {
                opts = DeleteOpts::from_body(&json!({"propagationPolicy": p})).map(|o| {
                    DeleteOpts {
                        propagation: o.propagation,
                        ..opts
                    }
                })?;
            }
            ok(store.delete(rt, ns, name, &opts)?)
        }
        (&Method::DELETE, None) => {
            verb(record, "deletecollection");
            let opts = DeleteOpts::from_body(&ctx.json_body()?)?;
            Ok(json_response(
                200,
                &store.delete_collection(
                    rt,
                    t.namespace.as_deref(),
                    &selectors(rt, ctx)?,
                    &opts,
                )?,
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            ctx.method, ctx.path
        ))),
    }
}

fn event_line(etype: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(shared: &Shared, ctx: &Ctx, t: &Target) -> Result<Response<Body>, ApiError> {
    let rt = t.rt.clone();
    let sel = selectors(&rt, ctx)?;
    let ns = t.namespace.clone();
    let start = shared
        .store
        .watch_start(&rt, ns.as_deref(), &sel, ctx.q("resourceVersion"))?;
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let initial_end = ctx.flag("sendInitialEvents");
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1800);
    let metadata_only = ctx.metadata_only();
    let as_table = ctx.table();
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let store = shared.store.clone();
    let stats = shared.stats.clone();
    let interval = shared.bookmark_interval;
    let mut changes = store.subscribe();
    stats.watch_opened();
    tokio::spawn(async move {
        let bookmark = |rv: u64, initial_end: bool| {
            let mut obj = json!({
                "kind": rt.kind,
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null},
            });
            if initial_end {
                obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line("BOOKMARK", &obj)
        };
        let shape = |v: Value| match as_table {
            Some(include) => {
                let rv = v
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table::table(&rt, &[v], json!({"resourceVersion": rv}), include)
            }
            None if metadata_only => partial(&v),
            None => v,
        };
        let send = |line: Bytes| {
            let tx = tx.clone();
            let stats = stats.clone();
            async move {
                stats.watch_event_sent();
                tx.send(line).await.is_ok()
            }
        };
        'stream: {
            let start = match start {
                Ok(s) => s,
                Err(gone) => {
                    send(event_line("ERROR", &gone.to_status())).await;
                    break 'stream;
                }
            };
            for obj in start.initial {
                if !send(event_line("ADDED", &shape(obj))).await {
                    break 'stream;
                }
            }
            let mut pos = start.pos;
            if initial_end && !send(bookmark(pos, true)).await {
                break 'stream;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let mut next_bookmark = tokio::time::Instant::now() + interval;
            loop {
                changes.borrow_and_update();
                match store.watch_poll(&rt, ns.as_deref(), &sel, pos, start.epoch) {
                    WatchPoll::Gone(e) => {
                        send(event_line("ERROR", &e.to_status())).await;
                        break 'stream;
                    }
                    WatchPoll::Events(events, new_pos) => {
                        for (etype, obj) in events {
                            if !send(event_line(etype.as_str(), &shape(obj))).await {
                                break 'stream;
                            }
                        }
                        pos = new_pos;
                    }
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break 'stream },
                    _ = tokio::time::sleep_until(next_bookmark) => {
                        next_bookmark = tokio::time::Instant::now() + interval;
                        if bookmarks && !send(bookmark(pos, false)).await {
                            break 'stream;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break 'stream,
                    _ = tx.closed() => break 'stream,
                }
            }
        }
        stats.watch_closed();
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(ChannelBody(rx).boxed())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `/standin/...`: stats, compaction, and the kubelet stand-in.
fn control(shared: &Shared, ctx: &Ctx) -> Response<Body> {
    match control_inner(shared, ctx) {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

fn body_str(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn control_inner(shared: &Shared, ctx: &Ctx) -> Result<Value, ApiError> {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    let kubelet = &shared.kubelet;
    match (&ctx.method, &segs[1..]) {
        (&Method::GET, ["stats"]) => to_value(shared.stats.snapshot(ctx.q("log") != Some("false"))),
        (&Method::POST, ["stats", "reset"]) => {
            shared.stats.reset();
            Ok(json!({}))
        }
        (&Method::POST, ["compact"]) => {
            let rv = shared.store.compact();
            if ctx.flag("expireWatches") {
                shared.store.expire_watches();
            }
            Ok(json!({"compactedResourceVersion": rv.to_string()}))
        }
        (&Method::POST, ["expire-watches"]) => {
            shared.store.expire_watches();
            Ok(json!({}))
        }
        (&Method::GET, ["kubelet"]) => to_value(kubelet.config()),
        (&Method::POST, ["kubelet", "auto"]) => {
            let body = ctx.json_body()?;
            if let Some(b) = body.get("autoRun").and_then(Value::as_bool) {
                kubelet.set_auto_run(b);
            }
            if let Some(b) = body.get("autoFinishDeletion").and_then(Value::as_bool) {
                kubelet.set_auto_finish_deletion(b);
            }
            to_value(kubelet.config())
        }
        (&Method::POST, ["kubelet", "namespaces", ns, "pods", name, action]) => {
            let body = ctx.json_body()?;
            let message = body_str(&body, "message");
            let exit = |default_code: i64| ContainerExit {
                exit_code: body
                    .get("exitCode")
                    .and_then(Value::as_i64)
                    .unwrap_or(default_code) as i32,
                reason: body_str(&body, "reason"),
                message: message.clone(),
            };
            let pod = match *action {
                "schedule" => kubelet.schedule(ns, name),
                "pending" => kubelet.pending(
                    ns,
                    name,
                    &body_str(&body, "reason").unwrap_or_else(|| "ContainerCreating".into()),
                    message.as_deref().unwrap_or_default(),
                ),
                "run" => kubelet.run(ns, name),
                "succeed" => kubelet.terminate(ns, name, exit(0)),
                "fail" => kubelet.terminate(ns, name, exit(1)),
                "terminate" => kubelet.terminate(ns, name, exit(0)),
                "evict" => kubelet.disrupt(ns, name, Disruption::eviction(message.as_deref())),
                "node-shutdown" => kubelet.disrupt(ns, name, Disruption::node_shutdown()),
                "preempt" => kubelet.disrupt(ns, name, Disruption::scheduler_preemption()),
                "disrupt" => {
                    let outcome = match body_str(&body, "phaseReason") {
                        Some(reason) if body.get("delete") != Some(&json!(true)) => {
                            Outcome::Fail { reason }
                        }
                        _ => Outcome::Delete,
                    };
                    kubelet.disrupt(
                        ns,
                        name,
                        Disruption {
                            condition_reason: body_str(&body, "conditionReason")
                                .unwrap_or_else(|| "TerminationByKubelet".into()),
                            message: message.clone().unwrap_or_default(),
                            outcome,
                        },
                    )
                }
                "finish-deletion" => kubelet
                    .finish_deletion(ns, name)
                    .map(|p| p.unwrap_or(Value::Null)),
                other => {
                    return Err(ApiError::path_not_found(&format!("kubelet action {other}")));
                }
            };
            pod.map_err(|e| match e {
                crate::Error::Api(api) => api,
                other => ApiError::bad_request(other.to_string()),
            })
        }
        _ => Err(ApiError::path_not_found(&ctx.path)),
    }
}
