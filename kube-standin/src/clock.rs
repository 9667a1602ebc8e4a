//! The time as the API server writes it in objects (RFC 3339, whole seconds, UTC).

/// Now, as `metav1.Time` serializes it: `2026-12-08T01:02:03Z`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
