//! Schema validation of a custom resource with the semantics and messages of the API
//! server's OpenAPI validator (`k8s.io/kube-openapi/pkg/validation`): types, required,
//! enum, bounds, lengths, item counts, patterns, formats, `anyOf`/`allOf`/`oneOf`/`not`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::field_error::{ErrorType, FieldError, go_bound, go_float, go_value, quote};
use crate::schema::Schema;

/// Validates `value` at `path` (`spec.tasks[1].name`; empty for the object root).
pub(crate) fn validate(value: &Value, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !s.type_.is_empty() && !s.nullable {
            errors.push(type_error(path, &s.type_, "null"));
        }
        check_enum(value, s, path, errors);
        return;
    }
    check_type(value, s, path, errors);
    check_combinators(value, s, path, errors);
    match value {
        Value::String(text) => {
            check_string(text, s, path, errors);
            check_format(text, s, path, errors);
        }
        Value::Number(_) => check_number(value, s, path, errors),
        Value::Array(items) => check_array(items, s, path, errors),
        _ => {}
    }
    check_enum(value, s, path, errors);
    if let Value::Object(fields) = value {
        check_object(fields, s, path, errors);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type of decoded data as the validator names it.
fn data_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, want: &str, got: &str) -> FieldError {
    FieldError::new(
        ErrorType::TypeInvalid,
        path,
        Some(quote(got)),
        &format!("{path} in body must be of type {want}: {}", quote(got)),
    )
}

fn check_type(value: &Value, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    if s.type_.is_empty() {
        return;
    }
    let got = data_type(value);
    let float_int =
        got == "number" && s.type_ == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0);
    let int_number = got == "integer" && s.type_ == "number";
    if s.type_ != got && !float_int && !int_number {
        errors.push(type_error(path, &s.type_, got));
    }
}

/// Errors of `value` against `s` alone.
fn errors_of(value: &Value, s: &Schema, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate(value, s, path, &mut errs);
    errs
}

fn check_combinators(value: &Value, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    for branch in &s.all_of {
        validate(value, branch, path, errors);
    }
    if !s.any_of.is_empty() {
        let results: Vec<Vec<FieldError>> =
            s.any_of.iter().map(|b| errors_of(value, b, path)).collect();
        if results.iter().all(|r| !r.is_empty()) {
            errors.push(FieldError::invalid(
                "<nil>",
                Some(quote("")),
                &format!("{} must validate at least one schema (anyOf)", quote(path)),
            ));
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                errors.extend(best);
            }
        }
    }
    if !s.one_of.is_empty() {
        let results: Vec<Vec<FieldError>> =
            s.one_of.iter().map(|b| errors_of(value, b, path)).collect();
        let passed = results.iter().filter(|r| r.is_empty()).count();
        if passed != 1 {
            errors.push(FieldError::invalid(
                "<nil>",
                Some(quote("")),
                &format!(
                    "{} must validate one and only one schema (oneOf)",
                    quote(path)
                ),
            ));
            if passed == 0
                && let Some(best) = results.into_iter().min_by_key(Vec::len)
            {
                errors.extend(best);
            }
        }
    }
    if let Some(not) = &s.not
        && errors_of(value, not, path).is_empty()
    {
        errors.push(FieldError::invalid(
            "<nil>",
            Some(quote("")),
            &format!("{} must not validate the schema (not)", quote(path)),
        ));
    }
}

fn check_string(text: &str, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    let chars = text.chars().count() as u64;
    if let Some(max) = s.max_length
        && chars > max
    {
        errors.push(FieldError::new(
            ErrorType::TooLong,
            path,
            Some(quote(text)),
            &format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = s.min_length
        && chars < min
    {
        errors.push(FieldError::invalid(
            path,
            Some(quote(text)),
            &format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = &s.pattern {
        let matched = Regex::new(pattern).map(|re| re.is_match(text));
        let detail = match matched {
            Ok(true) => None,
            Ok(false) => Some(format!("{path} in body should match '{pattern}'")),
            Err(e) => Some(format!(
                "{path} in body should match '{pattern}, but pattern is invalid: {e}'"
            )),
        };
        if let Some(detail) = detail {
            errors.push(FieldError::invalid(path, Some(quote(text)), &detail));
        }
    }
}

fn check_format(text: &str, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    if s.format.is_empty() || format_valid(&s.format, text) != Some(false) {
        return;
    }
    errors.push(FieldError::new(
        ErrorType::TypeInvalid,
        path,
        Some(quote(text)),
        &format!(
            "{path} in body must be of type {}: {}",
            s.format,
            quote(text)
        ),
    ));
}

macro_rules! format_regex {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pattern).expect("format patterns compile"));
    };
}

format_regex!(
    UUID,
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
);
format_regex!(
    UUID3,
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
);
format_regex!(
    UUID4,
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"
);
format_regex!(
    UUID5,
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"
);
format_regex!(
    HOSTNAME,
    r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$"
);
format_regex!(EMAIL, r"^[^@\s]+@[^@\s]+$");
format_regex!(
    MAC,
    r"(?i)^([0-9a-f]{2}[:-]){5}([0-9a-f]{2})$|^([0-9a-f]{4}\.){2}[0-9a-f]{4}$"
);
format_regex!(HEXCOLOR, r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$");
format_regex!(
    RGBCOLOR,
    r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$"
);
format_regex!(SSN, r"^\d{3}[- ]?\d{2}[- ]?\d{4}$");
format_regex!(ISBN10, r"^(?:[0-9]{9}X|[0-9]{10})$");
format_regex!(ISBN13, r"^(?:[0-9]{13})$");
format_regex!(BSON_OBJECT_ID, r"^[0-9a-fA-F]{24}$");
format_regex!(
    DURATION,
    r"^(-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^\d+\s*(ns|nanoseconds?|us|microseconds?|ms|milliseconds?|s|seconds?|m|minutes?|h|hours?|d|days?|w|weeks?)$"
);

/// Whether `text` is a valid `format` (formats the API server checks; others `None`).
fn format_valid(format: &str, text: &str) -> Option<bool> {
    let ok = match format.replace('-', "").as_str() {
        "uri" => text.contains("://") || text.starts_with('/'),
        "email" => EMAIL.is_match(text),
        "hostname" => text.len() <= 255 && HOSTNAME.is_match(text),
        "ipv4" => text.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<Ipv6Addr>().is_ok(),
        "cidr" => text.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "mac" => MAC.is_match(text),
        "uuid" => UUID.is_match(text),
        "uuid3" => UUID3.is_match(text),
        "uuid4" => UUID4.is_match(text),
        "uuid5" => UUID5.is_match(text),
        "isbn" => {
            ISBN10.is_match(&text.replace(['-', ' '], ""))
                || ISBN13.is_match(&text.replace(['-', ' '], ""))
        }
        "isbn10" => ISBN10.is_match(&text.replace(['-', ' '], "")),
        "isbn13" => ISBN13.is_match(&text.replace(['-', ' '], "")),
        "creditcard" => {
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            (12..=19).contains(&digits.len())
        }
        "ssn" => SSN.is_match(text),
        "hexcolor" => HEXCOLOR.is_match(text),
        "rgbcolor" => RGBCOLOR.is_match(text),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok()
        }
        "password" => true,
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "datetime" => {
            chrono::DateTime::parse_from_rfc3339(text).is_ok()
                || chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        }
        "duration" => DURATION.is_match(text),
        "bsonobjectid" => BSON_OBJECT_ID.is_match(text),
        _ => return None,
    };
    Some(ok)
}

fn check_number(value: &Value, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    let integer = value.is_i64();
    let shown = Some(go_value(value));
    let (x, as_int) = (value.as_f64().unwrap_or_default(), value.as_i64());
    if let Some(m) = s.multiple_of
        && m > 0.0
    {
        let ok = match as_int {
            Some(i) if m.fract() == 0.0 => i % (m as i64) == 0,
            _ => {
                let q = if m < 1.0 { 1.0 / m * x } else { x / m };
                q.fract() == 0.0
            }
        };
        if !ok {
            errors.push(FieldError::invalid(
                path,
                shown.clone(),
                &format!("{path} in body should be a multiple of {}", go_float(m)),
            ));
        }
    }
    // Integer data is compared with the bound truncated to an integer, as the validator does.
    let over = |bound: f64, exclusive: bool| match as_int {
        Some(i) => {
            let b = bound as i64;
            if exclusive { i >= b } else { i > b }
        }
        None => {
            if exclusive {
                x >= bound
            } else {
                x > bound
            }
        }
    };
    let under = |bound: f64, exclusive: bool| match as_int {
        Some(i) => {
            let b = bound as i64;
            if exclusive { i <= b } else { i < b }
        }
        None => {
            if exclusive {
                x <= bound
            } else {
                x < bound
            }
        }
    };
    if let Some(max) = s.maximum
        && over(max, s.exclusive_maximum)
    {
        let rel = if s.exclusive_maximum {
            "less than"
        } else {
            "less than or equal to"
        };
        errors.push(FieldError::invalid(
            path,
            shown.clone(),
            &format!("{path} in body should be {rel} {}", go_bound(max, integer)),
        ));
    }
    if let Some(min) = s.minimum
        && under(min, s.exclusive_minimum)
    {
        let rel = if s.exclusive_minimum {
            "greater than"
        } else {
            "greater than or equal to"
        };
        errors.push(FieldError::invalid(
            path,
            shown,
            &format!("{path} in body should be {rel} {}", go_bound(min, integer)),
        ));
    }
}

fn check_array(items: &[Value], s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(item_schema) = &s.items {
        for (i, item) in items.iter().enumerate() {
            validate(item, item_schema, &format!("{path}[{i}]"), errors);
        }
    }
    let n = items.len() as u64;
    if let Some(min) = s.min_items
        && n < min
    {
        errors.push(FieldError::invalid(
            path,
            Some(n.to_string()),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = s.max_items
        && n > max
    {
        errors.push(FieldError::new(
            ErrorType::TooMany,
            path,
            Some(n.to_string()),
            &format!("must have at most {max} items"),
        ));
    }
    if s.unique_items
        && items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].contains(a))
    {
        errors.push(FieldError::invalid(
            path,
            Some(quote("")),
            &format!("{path} in body shouldn't contain duplicates"),
        ));
    }
}

/// JSON equality with integers and floats compared by value, as the enum check converts.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn check_enum(value: &Value, s: &Schema, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = s.enum_values.as_ref().filter(|e| !e.is_empty()) else {
        return;
    };
    if allowed.iter().any(|a| same(a, value)) {
        return;
    }
    let supported: Vec<String> = allowed
        .iter()
        .map(|a| match a {
            Value::String(s) => quote(s),
            other => quote(&other.to_string()),
        })
        .collect();
    errors.push(FieldError::new(
        ErrorType::NotSupported,
        path,
        Some(go_value(value)),
        &format!("supported values: {}", supported.join(", ")),
    ));
}

fn check_object(
    fields: &serde_json::Map<String, Value>,
    s: &Schema,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let n = fields.len() as u64;
    if let Some(min) = s.min_properties
        && n < min
    {
        errors.push(FieldError::invalid(
            path,
            Some(min.to_string()),
            &format!("{path} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = s.max_properties
        && n > max
    {
        errors.push(FieldError::new(
            ErrorType::TooMany,
            path,
            Some(n.to_string()),
            &format!("must have at most {max} items"),
        ));
        return;
    }
    if let Some(values) = s.additional() {
        for (k, v) in fields
            .iter()
            .filter(|(k, _)| !s.properties.contains_key(*k))
        {
            validate(v, values, &join(path, k), errors);
        }
    }
    for (name, prop) in &s.properties {
        if let Some(v) = fields.get(name) {
            validate(v, prop, &join(path, name), errors);
        }
    }
    for name in &s.required {
        if !fields.contains_key(name) {
            errors.push(FieldError::required(&join(path, name), ""));
        }
    }
}

/// Whether any error stops the API server from running CEL rules.
pub(crate) fn blocks_cel(errors: &[FieldError]) -> bool {
    errors.iter().any(|e| e.kind.blocks_cel())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, value: Value) -> Vec<String> {
        let s = Schema::parse(&schema).unwrap();
        let mut errs = Vec::new();
        validate(&value, &s, "", &mut errs);
        errs.iter().map(ToString::to_string).collect()
    }

    fn spec(props: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}})
    }

    #[test]
    fn types_required_and_enums() {
        let s = json!({"type": "object", "required": ["spec"], "properties": {"spec": {
            "type": "object", "required": ["a"],
            "properties": {"a": {"type": "string", "enum": ["x", "y"]}, "n": {"type": "integer"}}
        }}});
        assert_eq!(errors(s.clone(), json!({})), ["spec: Required value"]);
        assert_eq!(
            errors(s.clone(), json!({"spec": {}})),
            ["spec.a: Required value"]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"a": "z"}})),
            ["spec.a: Unsupported value: \"z\": supported values: \"x\", \"y\""]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"a": "x", "n": "3"}})),
            [
                "spec.n: Invalid value: \"string\": spec.n in body must be of type integer: \"string\""
            ]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"a": "x", "n": 2.0}})),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(s, json!({"spec": {"a": "x", "n": null}})),
            ["spec.n: Invalid value: \"null\": spec.n in body must be of type integer: \"null\""]
        );
    }

    #[test]
    fn bounds_lengths_items_and_patterns() {
        let s = spec(json!({
            "batch": {"type": "integer", "minimum": 1.0, "maximum": 10.0},
            "lr": {"type": "number", "minimum": 0.0, "exclusiveMaximum": true, "maximum": 1.0},
            "name": {"type": "string", "maxLength": 3, "minLength": 1, "pattern": "^[a-z]+$"},
            "fields": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"}}
        }));
        assert_eq!(
            errors(s.clone(), json!({"spec": {"batch": -1}})),
            [
                "spec.batch: Invalid value: -1: spec.batch in body should be greater than or equal to 1"
            ]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"lr": 1.0}})),
            ["spec.lr: Invalid value: 1: spec.lr in body should be less than 1"]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"name": "abcd"}})),
            ["spec.name: Too long: may not be more than 3 bytes"]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"name": "A"}})),
            ["spec.name: Invalid value: \"A\": spec.name in body should match '^[a-z]+$'"]
        );
        assert_eq!(
            errors(s.clone(), json!({"spec": {"fields": ["a", "b", "c"]}})),
            ["spec.fields: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            errors(s, json!({"spec": {"fields": []}})),
            ["spec.fields: Invalid value: 0: spec.fields in body should have at least 1 items"]
        );
    }

    #[test]
    fn formats_and_int_or_string() {
        let s = spec(json!({
            "at": {"type": "string", "format": "date-time"},
            "size": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "count": {"type": "integer", "format": "int64"}
        }));
        assert_eq!(
            errors(s.clone(), json!({"spec": {"at": "yesterday"}})),
            [
                "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\""
            ]
        );
        assert!(
            errors(
                s.clone(),
                json!({"spec": {"at": "2025-01-01T00:00:00Z", "size": 3, "count": 4}})
            )
            .is_empty()
        );
        assert!(errors(s.clone(), json!({"spec": {"size": "3Gi"}})).is_empty());
        let errs = errors(s, json!({"spec": {"size": true}}));
        assert_eq!(
            errs[0],
            "<nil>: Invalid value: \"\": \"spec.size\" must validate at least one schema (anyOf)"
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn type_and_enum_errors_block_cel() {
        let s = Schema::parse(&spec(json!({"a": {"type": "string", "enum": ["x"]}}))).unwrap();
        let mut errs = Vec::new();
        validate(&json!({"spec": {"a": "y"}}), &s, "", &mut errs);
        assert!(blocks_cel(&errs));
    }
}
