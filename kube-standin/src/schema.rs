//! Structural schemas: the `openAPIV3Schema` of a CustomResourceDefinition version, read the
//! way the API server reads it for validation, pruning, defaulting, CEL and OpenAPI.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::admission::field_error::{FieldError, quote};
use crate::cel::{CompiledRule, ValidationRule};

/// One node of a structural schema.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Schema {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub nullable: bool,
    pub default: Option<Value>,
    #[serde(default)]
    pub properties: BTreeMap<String, Schema>,
    #[serde(default)]
    pub required: Vec<String>,
    pub items: Option<Box<Schema>>,
    pub additional_properties: Option<AdditionalProperties>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<Value>>,
    pub maximum: Option<f64>,
    #[serde(default)]
    pub exclusive_maximum: bool,
    pub minimum: Option<f64>,
    #[serde(default)]
    pub exclusive_minimum: bool,
    pub multiple_of: Option<f64>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    pub pattern: Option<String>,
    pub max_items: Option<u64>,
    pub min_items: Option<u64>,
    #[serde(default)]
    pub unique_items: bool,
    pub max_properties: Option<u64>,
    pub min_properties: Option<u64>,
    #[serde(default)]
    pub all_of: Vec<Schema>,
    #[serde(default)]
    pub any_of: Vec<Schema>,
    #[serde(default)]
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    #[serde(rename = "x-kubernetes-preserve-unknown-fields", default)]
    pub preserve_unknown_fields: bool,
    #[serde(rename = "x-kubernetes-int-or-string", default)]
    pub int_or_string: bool,
    #[serde(rename = "x-kubernetes-embedded-resource", default)]
    pub embedded_resource: bool,
    #[serde(rename = "x-kubernetes-list-type")]
    pub list_type: Option<String>,
    #[serde(rename = "x-kubernetes-list-map-keys", default)]
    pub list_map_keys: Vec<String>,
    #[serde(rename = "x-kubernetes-validations", default)]
    pub validations: Vec<ValidationRule>,
    /// `validations`, compiled (filled by [`Schema::compile`]).
    #[serde(skip)]
    pub rules: Vec<CompiledRule>,
}

/// `additionalProperties`: a schema for the values of a map, or a boolean.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum AdditionalProperties {
    Bool(bool),
    Schema(Box<Schema>),
}

impl Schema {
    /// Parses an `openAPIV3Schema` document.
    pub(crate) fn parse(doc: &Value) -> Result<Self, String> {
        serde_json::from_value(doc.clone()).map_err(|e| e.to_string())
    }

    /// The schema of a map's values, when `additionalProperties` is a schema.
    pub(crate) fn additional(&self) -> Option<&Schema> {
        match &self.additional_properties {
            Some(AdditionalProperties::Schema(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether a list's items correlate with the old list's (only `x-kubernetes-list-type: map`).
    pub(crate) fn is_map_list(&self) -> bool {
        self.list_type.as_deref() == Some("map") && !self.list_map_keys.is_empty()
    }

    /// Compiles every `x-kubernetes-validations` rule and checks the structural rules the API
    /// server enforces on CRD schemas; `path` is where this node sits in the CRD.
    /// `correlatable` is false below lists whose items cannot be matched with old items.
    pub(crate) fn compile(
        &mut self,
        path: &str,
        correlatable: bool,
        problems: &mut Vec<FieldError>,
    ) {
        let structural_type =
            !self.type_.is_empty() || self.int_or_string || self.preserve_unknown_fields;
        if !structural_type {
            problems.push(FieldError::required(
                &format!("{path}.type"),
                "must not be empty for specified object fields",
            ));
        }
        if self.type_ == "array" && self.items.is_none() {
            problems.push(FieldError::required(
                &format!("{path}.items"),
                "must be specified",
            ));
        }
        if !self.properties.is_empty()
            && matches!(
                self.additional_properties,
                Some(AdditionalProperties::Schema(_))
            )
        {
            problems.push(FieldError::new(
                crate::admission::field_error::ErrorType::Forbidden,
                &format!("{path}.additionalProperties"),
                None,
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        self.rules.clear();
        for (i, rule) in self.validations.iter().enumerate() {
            let at = format!("{path}.x-kubernetes-validations[{i}]");
            match CompiledRule::compile(rule) {
                Ok(compiled) => {
                    if compiled.transition && !correlatable {
                        problems.push(FieldError::invalid(
                            &format!("{at}.rule"),
                            Some(quote(&rule.rule)),
                            &format!(
                                "oldSelf cannot be used on the uncorrelatable portion of the schema within {path}"
                            ),
                        ));
                    }
                    if !rule.field_path.is_empty()
                        && self.resolve_field_path(&rule.field_path).is_none()
                    {
                        problems.push(FieldError::invalid(
                            &format!("{at}.fieldPath"),
                            Some(quote(&rule.field_path)),
                            "fieldPath must be a valid path",
                        ));
                    }
                    self.rules.push(compiled);
                }
                Err((field, value, detail)) => problems.push(FieldError::invalid(
                    &format!("{at}.{field}"),
                    Some(quote(&value)),
                    &detail,
                )),
            }
        }
        let map_list = self.is_map_list();
        if map_list && let Some(items) = &self.items {
            // A key must be present in every item for the items to be told apart.
            for key in &self.list_map_keys {
                match items.properties.get(key) {
                    Some(p) if p.default.is_none() && !items.required.contains(key) => {
                        problems.push(FieldError::required(
                            &format!("{path}.items.properties[{key}].default"),
                            "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                        ));
                    }
                    Some(_) => {}
                    None => problems.push(FieldError::invalid(
                        &format!("{path}.x-kubernetes-list-map-keys"),
                        Some(format!("[{}]", self.list_map_keys.join(" "))),
                        "entries must all be names of item properties",
                    )),
                }
            }
        }
        for (name, prop) in &mut self.properties {
            prop.compile(
                &format!("{path}.properties[{name}]"),
                correlatable,
                problems,
            );
        }
        if let Some(items) = &mut self.items {
            items.compile(&format!("{path}.items"), correlatable && map_list, problems);
        }
        if let Some(AdditionalProperties::Schema(s)) = &mut self.additional_properties {
            s.compile(
                &format!("{path}.additionalProperties"),
                correlatable,
                problems,
            );
        }
    }

    /// Follows a rule's `fieldPath` (`.a.b`, `['a'].b`) down the properties; the normalized
    /// path segments when every step exists.
    pub(crate) fn resolve_field_path(&self, field_path: &str) -> Option<Vec<String>> {
        let mut segments = Vec::new();
        let mut rest = field_path;
        let mut node = self;
        while !rest.is_empty() {
            let (name, tail) = if let Some(r) = rest.strip_prefix(".") {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                (r[..end].to_string(), &r[end..])
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r.find("']")?;
                (r[..end].to_string(), &r[end + 2..])
            } else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            node = match node.properties.get(&name) {
                Some(p) => p,
                None => node.additional()?,
            };
            segments.push(name);
            rest = tail;
        }
        Some(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_compiles_the_rules_of_every_node() {
        let mut s = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [{"rule": "self.a > 0", "fieldPath": ".a"}],
                    "properties": {"a": {"type": "integer"}}
                }
            }
        }))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.properties["spec"].rules.len(), 1);
        assert_eq!(
            s.properties["spec"].resolve_field_path(".a"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(s.properties["spec"].resolve_field_path(".b"), None);
    }

    #[test]
    fn rejects_untyped_nodes_bad_rules_and_uncorrelatable_transition_rules() {
        let mut s = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "untyped": {},
                "bad": {"type": "string", "x-kubernetes-validations": [{"rule": "self ==="}]},
                "list": {"type": "array", "items": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}]
                }}
            }
        }))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        let fields: Vec<&str> = problems.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"openAPIV3Schema.properties[untyped].type"),
            "{problems:?}"
        );
        assert!(
            fields.contains(&"openAPIV3Schema.properties[bad].x-kubernetes-validations[0].rule"),
            "{problems:?}"
        );
        assert!(
            fields.contains(
                &"openAPIV3Schema.properties[list].items.x-kubernetes-validations[0].rule"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn an_array_says_what_its_items_are() {
        let mut s = Schema::parse(&json!({"type": "object",
            "properties": {"tags": {"type": "array"}}}))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["openAPIV3Schema.properties[tags].items: Required value: must be specified"]
        );
    }

    #[test]
    fn properties_and_additional_properties_exclude_each_other() {
        let mut s = Schema::parse(&json!({"type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "string"}}))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "openAPIV3Schema.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            ]
        );
    }

    #[test]
    fn map_list_keys_must_be_required_or_defaulted() {
        let list = |required: Value| {
            json!({"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name", "port"],
            "items": {"type": "object", "required": required, "properties": {
                "name": {"type": "string"}, "port": {"type": "integer", "default": 80}
            }}})
        };
        let problems = |s: Value| {
            let mut s = Schema::parse(&s).unwrap();
            let mut problems = Vec::new();
            s.compile("openAPIV3Schema", true, &mut problems);
            problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(problems(list(json!(["name"]))).is_empty());
        assert_eq!(
            problems(list(json!([]))),
            [
                "openAPIV3Schema.items.properties[name].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"
            ]
        );
    }
}
