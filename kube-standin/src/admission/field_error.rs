//! Field errors worded as the API server words them (`k8s.io/apimachinery`'s `field.Error`):
//! `spec.tasks[1].numChoices: Required value: ...`, `spec.x: Invalid value: -1: ...`.

use serde_json::Value;

/// `field.ErrorType`: the kind of a field error and its `Status` cause reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Required,
    Invalid,
    /// Schema type mismatch: printed as "Invalid value", blocks CEL rules.
    TypeInvalid,
    /// A value outside an enum: blocks CEL rules.
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Duplicate,
}

impl ErrorType {
    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Duplicate => "Duplicate value",
        }
    }

    /// `Status.details.causes[].reason`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
        }
    }

    /// Errors after which the API server does not run CEL rules.
    pub(crate) fn blocks_cel(self) -> bool {
        matches!(self, Self::TypeInvalid | Self::NotSupported)
    }
}

/// One field error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The bad value as Go's `%v`/`%q` prints it; `None` when the error omits it.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub(crate) fn new(kind: ErrorType, field: &str, value: Option<String>, detail: &str) -> Self {
        Self {
            kind,
            field: field.to_string(),
            value,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn required(field: &str, detail: &str) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    pub(crate) fn invalid(field: &str, value: Option<String>, detail: &str) -> Self {
        Self::new(ErrorType::Invalid, field, value, detail)
    }

    /// `field.Error.ErrorBody()`: the message without the field.
    pub(crate) fn body(&self) -> String {
        let mut s = match (&self.kind, &self.value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong, _) | (_, None) => {
                self.kind.label().to_string()
            }
            (_, Some(v)) => format!("{}: {v}", self.kind.label()),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` of a string.
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// A JSON value as `field.Error` prints a decoded value: strings quoted, numbers and
/// booleans bare, `null` as `"null"`.
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => quote("null"),
        Value::String(s) => quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or_default()),
        },
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (`%g`, shortest): an exponent below 1e-4 and from 1e6
/// (`1e-05`, `0.5`, `1`, `123456`, `1e+06`).
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A number from a schema (`minimum: 1.0`) as Go prints it next to the value's type: an
/// integer bound for integer data, a float otherwise.
pub(crate) fn go_bound(bound: f64, integer_data: bool) -> String {
    if integer_data {
        (bound as i64).to_string()
    } else {
        go_float(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_read_like_the_api_server() {
        assert_eq!(
            FieldError::required("spec.tasks[1].numChoices", "needs numChoices").to_string(),
            "spec.tasks[1].numChoices: Required value: needs numChoices"
        );
        assert_eq!(
            FieldError::invalid("spec", Some(quote("object")), "task names must be unique")
                .to_string(),
            "spec: Invalid value: \"object\": task names must be unique"
        );
        assert_eq!(
            FieldError::new(
                ErrorType::TooLong,
                "a",
                Some("\"x\"".into()),
                "may not be more than 1 bytes"
            )
            .body(),
            "Too long: may not be more than 1 bytes"
        );
        assert_eq!(FieldError::required("a", "").body(), "Required value");
    }

    #[test]
    fn values_print_like_go() {
        assert_eq!(go_value(&json!(-1)), "-1");
        assert_eq!(go_value(&json!(0.5)), "0.5");
        assert_eq!(go_value(&json!("a\"b")), "\"a\\\"b\"");
        assert_eq!(go_value(&Value::Null), "\"null\"");
        assert_eq!(go_float(1e-5), "1e-05");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.01), "0.01");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_bound(1.0, true), "1");
    }
}
