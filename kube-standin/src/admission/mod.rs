//! Admission of custom resources as the API server does it for a type served by a CRD:
//! pruning of undeclared fields (warned, or refused under `fieldValidation=Strict`),
//! defaulting, OpenAPI schema validation, then the CEL rules, all failures in one 422.

pub(crate) mod defaulting;
pub(crate) mod field_error;
pub(crate) mod pruning;
pub(crate) mod rules;
pub(crate) mod validation;

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceType;
use field_error::{FieldError, quote};

/// `fieldValidation`: what a write does with fields the schema does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and answer a `Warning` header per field (the API server's default).
    #[default]
    Warn,
    /// Refuse the write (what `kubectl apply` asks for by default).
    Strict,
}

impl FieldValidation {
    /// The `fieldValidation` query parameter.
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {}: supported values: \"Ignore\", \"Strict\", \"Warn\"",
                quote(other)
            ))),
        }
    }
}

/// How the object of a write came about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Decoded from the request body (create, update).
    #[default]
    Body,
    /// A JSON, merge or strategic patch applied to the stored object.
    Patch,
    /// A server-side apply patch.
    Apply,
}

/// Admits `obj`, written as `rt` (`old` on updates; only `.status` is validated when
/// `status_only`). Returns the warnings to send with the response.
pub(crate) fn admit(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    status_only: bool,
    validation: FieldValidation,
    origin: Origin,
) -> Result<Vec<String>, ApiError> {
    let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Ok(Vec::new());
    };
    let written =
        (validation == FieldValidation::Strict && origin == Origin::Patch).then(|| obj.to_string());
    let unknown = pruning::prune(obj, schema);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Ignore => {}
            FieldValidation::Warn => {
                warnings.extend(
                    unknown
                        .iter()
                        .map(|p| format!("unknown field {}", quote(p))),
                );
            }
            FieldValidation::Strict => {
                return Err(strict_error(
                    rt,
                    &unknown,
                    origin,
                    written.unwrap_or_default(),
                ));
            }
        }
    }
    defaulting::drop_non_nullable_nulls(obj, schema);
    defaulting::apply_defaults(obj, schema);

    let mut errors = Vec::new();
    if status_only {
        if let (Some(status_schema), Some(status)) =
            (schema.properties.get("status"), obj.get("status"))
        {
            validation::validate(status, status_schema, "status", &mut errors);
        }
    } else {
        validation::validate(obj, schema, "", &mut errors);
    }
    if let Some(old) = old {
        errors.retain(|e| {
            !unchanged(
                &e.field,
                e.kind == field_error::ErrorType::Required,
                obj,
                old,
            )
        });
    }
    if validation::blocks_cel(&errors) {
        errors.push(FieldError::invalid(
            "<nil>",
            Some(quote("null")),
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ));
    } else {
        rules::check(obj, old, schema, &mut errors, &mut warnings);
    }
    if errors.is_empty() {
        return Ok(warnings);
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::invalid(rt, name, errors))
}

fn strict_error(
    rt: &ResourceType,
    unknown: &[String],
    origin: Origin,
    written: String,
) -> ApiError {
    let list: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {}", quote(p)))
        .collect();
    let strict = format!("strict decoding error: {}", list.join(", "));
    match origin {
        Origin::Body => ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: {strict}",
            kind = rt.kind,
            version = rt.version
        )),
        Origin::Patch => {
            ApiError::invalid_patch(FieldError::invalid("patch", Some(quote(&written)), &strict))
        }
        Origin::Apply => ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={}): {}",
            rt.api_version(),
            rt.kind,
            unknown
                .iter()
                .map(|p| format!(".{p}: field not declared in schema"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether the value an error is about is the same in the old object (validation
/// ratcheting): for a required field, its parent object; items of lists are compared as
/// their whole list, which is what correlates.
fn unchanged(field: &str, required: bool, new: &Value, old: &Value) -> bool {
    if field == "<nil>" {
        return false;
    }
    let mut pointer = String::new();
    let mut segments: Vec<String> = Vec::new();
    for part in field.split('.') {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, i)| (n, i));
        segments.push(format!("/{name}"));
        if !indexes.is_empty() {
            // Stop at the first list: it is compared whole.
            let at: String = segments.concat();
            return new.pointer(&at) == old.pointer(&at);
        }
    }
    if required {
        segments.pop();
    }
    pointer.push_str(&segments.concat());
    new.pointer(&pointer) == old.pointer(&pointer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratcheting_compares_the_value_at_fault() {
        let old = json!({"spec": {"a": 1, "list": [1, 2], "o": {}}});
        let new = json!({"spec": {"a": 1, "list": [1, 3], "o": {}, "b": 2}});
        assert!(unchanged("spec.a", false, &new, &old));
        assert!(!unchanged("spec.list[1]", false, &new, &old));
        assert!(unchanged("spec.o.x", true, &new, &old));
        assert!(!unchanged("spec.x", true, &new, &old));
        assert!(!unchanged("<nil>", false, &new, &old));
    }
}
