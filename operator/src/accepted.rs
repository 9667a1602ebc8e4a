//! The operator's signature of `status.acceptedSpec`.
//!
//! The accepted spec decides what every attempt runs, and anyone who may write a job's
//! `/status` could rewrite it, past the CRD's immutability rules on `spec` and past the
//! policy judged at acceptance. The operator therefore signs what it accepts: an HMAC-SHA256,
//! with a key only it holds (`--accepted-spec-key-file`, a Secret the chart creates), over the
//! job's uid (so a signed spec cannot be copied onto another job) and the accepted spec in a
//! canonical JSON form (keys sorted, nulls dropped, whole numbers written as integers: the API
//! server may re-encode `3.0` as `3`). Pure: tested below.

use ring::hmac;
use serde_json::Value;

const SCHEME: &str = "hmac-sha256:";

/// The key the accepted specs are signed with.
#[derive(Clone)]
pub struct AcceptedSpecKey(hmac::Key);

impl std::fmt::Debug for AcceptedSpecKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptedSpecKey(..)")
    }
}

impl PartialEq for AcceptedSpecKey {
    fn eq(&self, _: &Self) -> bool {
        // Keys are never compared; configs holding one compare equal on the rest.
        true
    }
}

impl AcceptedSpecKey {
    /// A key from secret bytes (surrounding whitespace, as a file written by hand ends with a
    /// newline, is not part of it). At least 16 bytes.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < 16 {
            return Err(format!(
                "the accepted-spec key has {} bytes; it needs at least 16 (the chart generates 64)",
                secret.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// Reads the key from a file; the error names the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the accepted-spec key {}: {e}", path.display()))?;
        Self::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The digest to store beside `spec` as job `uid`'s accepted spec.
    pub fn sign(&self, uid: &str, spec: &Value) -> String {
        let tag = hmac::sign(&self.0, &message(uid, spec));
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{SCHEME}{hex}")
    }

    /// Whether `digest` is this key's signature of `spec` for job `uid` (in constant time).
    pub fn verify(&self, uid: &str, spec: &Value, digest: &str) -> bool {
        let Some(tag) = digest.strip_prefix(SCHEME).and_then(from_hex) else {
            return false;
        };
        hmac::verify(&self.0, &message(uid, spec), &tag).is_ok()
    }
}

fn message(uid: &str, spec: &Value) -> Vec<u8> {
    let mut out = uid.as_bytes().to_vec();
    out.push(0);
    out.extend(serde_json::to_vec(&canonical(spec)).unwrap_or_default());
    out
}

/// `v` with map keys sorted, null members dropped and whole numbers as integers.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut sorted: Vec<(&String, &Value)> =
                m.iter().filter(|(_, v)| !v.is_null()).collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> AcceptedSpecKey {
        AcceptedSpecKey::new(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    #[test]
    fn a_signed_spec_verifies_as_the_api_server_may_re_encode_it() {
        let spec = json!({"image": "a:1", "training": {"epochs": 3.0, "learningRate": 2e-5},
                          "workers": 2, "resources": null});
        let digest = key().sign("uid-1", &spec);
        assert!(digest.starts_with("hmac-sha256:"), "{digest}");
        assert_eq!(digest.len(), "hmac-sha256:".len() + 64);
        // Go's encoder writes 3.0 as 3 and drops nothing; keys come back in another order.
        let reencoded: Value = serde_json::from_str(
            r#"{"workers": 2, "training": {"learningRate": 0.00002, "epochs": 3}, "image": "a:1"}"#,
        )
        .unwrap();
        assert!(key().verify("uid-1", &reencoded, &digest));
    }

    #[test]
    fn a_changed_spec_another_job_or_another_key_does_not_verify() {
        let spec = json!({"image": "a:1", "workers": 2});
        let digest = key().sign("uid-1", &spec);
        assert!(!key().verify("uid-1", &json!({"image": "b:1", "workers": 2}), &digest));
        assert!(!key().verify("uid-2", &spec, &digest));
        let other = AcceptedSpecKey::new(b"another key of 16+ bytes").unwrap();
        assert!(!other.verify("uid-1", &spec, &digest));
        for bad in [
            "",
            "hmac-sha256:",
            "hmac-sha256:zz",
            "sha256:00",
            &digest[..digest.len() - 1],
        ] {
            assert!(!key().verify("uid-1", &spec, bad), "{bad:?}");
        }
    }

    #[test]
    fn a_short_key_is_refused() {
        let err = AcceptedSpecKey::new(b"short\n").unwrap_err();
        assert!(err.contains("at least 16"), "{err}");
    }
}
