//! The types CEL rules are checked against, derived from a structural schema as the API server
//! derives them (apiserver's `SchemaDeclType`), with the two figures its cost estimate rests
//! on: the most elements a value can hold in one request (characters of a string in bytes,
//! items of a list, entries of a map) and the fewest bytes it takes serialized as JSON, from
//! which the sizes of unbounded lists and maps and the cardinality of a rule are estimated.

use std::collections::BTreeMap;

use super::escape_property;
use crate::schema::Schema;

/// The largest request body the API server accepts (`3 * 1024 * 1024`): the bound of every
/// size a schema leaves open.
pub(crate) const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

/// Fewest bytes of a JSON value of each kind (apiserver's `limits.go`): `""`, `0`, `true`,
/// `[]` / `{}`, `"0s"` less its quotes' worth, a date and a date-time.
const MIN_STRING_SIZE: u64 = 2;
const MIN_NUMBER_SIZE: u64 = 1;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_COLLECTION_SIZE: u64 = 2;
const MIN_DURATION_SIZE: u64 = 3;
const MIN_DATETIME_SIZE: u64 = 21;
const DATE_SIZE: u64 = 12;
/// The size the estimate gives a duration or a date-time, whatever the schema says.
const MAX_DURATION_SIZE: u64 = 32;
const MAX_DATETIME_SIZE: u64 = 32;

/// A map's keys: strings the estimate gives no size (the API server's shared `StringType`).
pub(crate) static MAP_KEY: DeclType = DeclType {
    kind: DeclKind::String,
    max_elements: 0,
    min_serialized_size: MIN_STRING_SIZE,
};

/// What a value of a schema node is to CEL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`: an int or a string, typed `dyn`.
    IntOrString,
    List(Box<DeclType>),
    /// `additionalProperties`: string keys, values of one type.
    Map(Box<DeclType>),
    /// `properties`: an object whose fields are known (those with a type).
    Object(BTreeMap<String, DeclType>),
}

/// A node's CEL type with its size bounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeclType {
    pub kind: DeclKind,
    /// The most elements a value can have: bytes of a string, items, entries; 0 where the
    /// API server records none (scalars, objects).
    pub max_elements: u64,
    /// The fewest bytes the value takes as JSON.
    pub min_serialized_size: u64,
}

impl DeclType {
    fn new(kind: DeclKind, max_elements: u64, min_serialized_size: u64) -> Self {
        Self {
            kind,
            max_elements,
            min_serialized_size,
        }
    }

    /// The type of a schema node; `None` for a node CEL cannot see (no type, or a list or
    /// map of such nodes), which a parent leaves out of its fields.
    pub(crate) fn of(s: &Schema) -> Option<Self> {
        if s.int_or_string {
            // The longest value is the longest string allowed, or a request can carry.
            let max = s
                .max_length
                .map_or(MAX_REQUEST_SIZE_BYTES - 2, |n| n.saturating_mul(4));
            return Some(Self::new(DeclKind::IntOrString, max, MIN_NUMBER_SIZE));
        }
        match s.type_.as_str() {
            "boolean" => Some(Self::new(DeclKind::Bool, 0, MIN_BOOL_SIZE)),
            "integer" => Some(Self::new(DeclKind::Int, 0, MIN_NUMBER_SIZE)),
            "number" => Some(Self::new(DeclKind::Double, 0, MIN_NUMBER_SIZE)),
            "string" => Some(string(s)),
            "array" => {
                let items = Self::of(s.items.as_deref()?)?;
                let max = s
                    .max_items
                    .unwrap_or_else(|| max_list_items(items.min_serialized_size));
                Some(Self::new(
                    DeclKind::List(Box::new(items)),
                    max,
                    MIN_COLLECTION_SIZE,
                ))
            }
            "object" => {
                if let Some(values) = s.additional() {
                    let values = Self::of(values)?;
                    let max = s
                        .max_properties
                        .unwrap_or_else(|| max_map_entries(values.min_serialized_size));
                    return Some(Self::new(
                        DeclKind::Map(Box::new(values)),
                        max,
                        MIN_COLLECTION_SIZE,
                    ));
                }
                Some(Self::object(s))
            }
            _ => None,
        }
    }

    /// An object's type: its typed properties by their CEL names (escaped, as
    /// `escape_property` does; a name CEL cannot spell is left out).
    /// Its fewest bytes are `{}` and each required property without a default:
    /// `"name":value,`.
    fn object(s: &Schema) -> Self {
        let mut min_size = MIN_COLLECTION_SIZE;
        let mut fields = BTreeMap::new();
        for (name, prop) in &s.properties {
            let Some(decl) = Self::of(prop) else { continue };
            if s.required.contains(name) && prop.default.is_none() {
                min_size =
                    min_size.saturating_add(name.len() as u64 + decl.min_serialized_size + 4);
            }
            if let Some(cel_name) = escape_property(name) {
                fields.insert(cel_name, decl);
            }
        }
        Self::new(DeclKind::Object(fields), 0, min_size)
    }

    /// The type of a resource's root schema: its properties, and `apiVersion`, `kind`,
    /// `metadata.name` and `metadata.generateName`, which rules on the root may always read.
    pub(crate) fn resource_root(s: &Schema) -> Option<Self> {
        if s.type_ != "object" {
            return Self::of(s);
        }
        let mut root = Self::object(s);
        if let DeclKind::Object(fields) = &mut root.kind {
            let open_string = || {
                DeclType::new(
                    DeclKind::String,
                    MAX_REQUEST_SIZE_BYTES - 2,
                    MIN_STRING_SIZE,
                )
            };
            for name in ["apiVersion", "kind"] {
                fields.entry(name.to_string()).or_insert_with(open_string);
            }
            fields.entry("metadata".to_string()).or_insert_with(|| {
                let names = ["name", "generateName"].map(|k| (k.to_string(), open_string()));
                Self::new(
                    DeclKind::Object(names.into_iter().collect()),
                    0,
                    MIN_COLLECTION_SIZE,
                )
            });
        }
        Some(root)
    }
}

fn string(s: &Schema) -> DeclType {
    let open = MAX_REQUEST_SIZE_BYTES - 2;
    match s.format.as_str() {
        // The estimate takes a byte string's maxLength as it is.
        "byte" => DeclType::new(
            DeclKind::Bytes,
            s.max_length.unwrap_or(open),
            MIN_STRING_SIZE,
        ),
        "duration" => DeclType::new(DeclKind::Duration, MAX_DURATION_SIZE, MIN_DURATION_SIZE),
        "date" => DeclType::new(DeclKind::Timestamp, DATE_SIZE, DATE_SIZE),
        "date-time" => DeclType::new(DeclKind::Timestamp, MAX_DATETIME_SIZE, MIN_DATETIME_SIZE),
        _ => {
            let max = match (s.max_length, &s.enum_values) {
                // maxLength counts characters; a character is up to 4 bytes of UTF-8.
                (Some(n), _) => n.saturating_mul(4),
                (None, Some(values)) if !values.is_empty() => values
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|v| v.len() as u64)
                    .max()
                    .unwrap_or(0),
                _ => open,
            };
            DeclType::new(DeclKind::String, max, MIN_STRING_SIZE)
        }
    }
}

/// Items of an unbounded list that fit in a request: `[` and `]`, then each item and a comma.
pub(crate) fn max_list_items(min_item_size: u64) -> u64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min_item_size + 1)
}

/// Entries of an unbounded map that fit in a request: `{` and `}`, then a key of at least
/// one character, its quotes, the colon, the value and a comma for each.
fn max_map_entries(min_value_size: u64) -> u64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min_value_size + 6)
}

/// How many times a value of `min_size` bytes can occur in one request: the cardinality of
/// a node below an unbounded list or map (`unboundedCardinality`).
pub(crate) fn unbounded_cardinality(min_size: u64) -> u64 {
    // The value and a comma between it and the next.
    MAX_REQUEST_SIZE_BYTES / (min_size + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(v: serde_json::Value) -> DeclType {
        DeclType::of(&Schema::parse(&v).unwrap()).unwrap()
    }

    #[test]
    fn sizes_come_from_the_bounds_or_the_request_limit() {
        let bounded = decl(json!({"type": "string", "maxLength": 10}));
        assert_eq!(bounded.max_elements, 40);
        let open = decl(json!({"type": "string"}));
        assert_eq!(open.max_elements, 3_145_726);
        let list = decl(json!({"type": "array", "items": {"type": "string"}}));
        assert_eq!(list.max_elements, 1_048_575);
        let enumerated = decl(json!({"type": "string", "enum": ["a", "abcd"]}));
        assert_eq!(enumerated.max_elements, 4);
        assert_eq!(unbounded_cardinality(2), 1_048_576);
    }
}
