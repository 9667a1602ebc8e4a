//! `/openapi/v2` as `kubectl` reads it: the Swagger 2.0 document in gnostic's protobuf
//! (`openapiv2/OpenAPIv2.proto`), encoded with `prost`. Only the messages and fields the
//! document uses are declared; a `oneof` is encoded as the optional field it is on the wire.

use prost::Message;
use serde_json::{Map, Value};

use super::all_schemas_and_paths;
use crate::resources::Registry;

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Operation {
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `oneof { Parameter parameter = 1; JsonReference json_reference = 2; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// `oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Parameter {
    #[prost(message, optional, tag = "2")]
    pub non_body_parameter: Option<NonBodyParameter>,
}

/// `oneof { ... QueryParameterSubSchema = 3; PathParameterSubSchema = 4; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    pub query_parameter_sub_schema: Option<QueryParameter>,
    #[prost(message, optional, tag = "4")]
    pub path_parameter_sub_schema: Option<PathParameter>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct QueryParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PathParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `oneof { Response response = 1; JsonReference json_reference = 2; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// `oneof { Schema schema = 1; FileSchema file_schema = 2; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `oneof { Schema schema = 1; bool boolean = 2; }`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct AdditionalPropertiesItem {
    #[prost(message, optional, boxed, tag = "1")]
    pub schema: Option<Box<Schema>>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Schema {
    #[prost(string, tag = "1")]
    pub xref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalPropertiesItem>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

fn yaml(v: &Value) -> Any {
    Any {
        yaml: serde_yaml::to_string(v).unwrap_or_default(),
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A v3 schema as Swagger 2.0 has it: references into `#/definitions/`, a single `allOf`
/// reference folded into `$ref`, `nullable`, `anyOf`, `oneOf` and `not` dropped.
fn schema(v: &Value) -> Schema {
    let mut out = Schema {
        description: text(v, "description"),
        ..Default::default()
    };
    let single_ref = v
        .get("allOf")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
        .and_then(|a| a[0].get("$ref"));
    if let Some(r) = v.get("$ref").or(single_ref).and_then(Value::as_str) {
        out.xref = r.replace("#/components/schemas/", "#/definitions/");
        return out;
    }
    out.format = text(v, "format");
    out.pattern = text(v, "pattern");
    if let Some(t) = v.get("type").and_then(Value::as_str) {
        out.r#type = Some(TypeItem {
            value: vec![t.to_string()],
        });
    }
    if let Some(d) = v.get("default") {
        out.default = Some(yaml(d));
    }
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let int = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or_default();
    out.maximum = num("maximum").unwrap_or_default();
    out.minimum = num("minimum").unwrap_or_default();
    out.exclusive_maximum = v.get("exclusiveMaximum") == Some(&Value::Bool(true));
    out.exclusive_minimum = v.get("exclusiveMinimum") == Some(&Value::Bool(true));
    out.max_length = int("maxLength");
    out.min_length = int("minLength");
    out.max_items = int("maxItems");
    out.min_items = int("minItems");
    out.required = v
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.r#enum = v
        .get("enum")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(yaml).collect())
        .unwrap_or_default();
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        out.properties = Some(Properties {
            additional_properties: named(props),
        });
    }
    match v.get("items") {
        Some(items) => {
            out.items = Some(ItemsItem {
                schema: vec![schema(items)],
            })
        }
        // kubectl's parser wants exactly one item schema for every array.
        None if v.get("type") == Some(&Value::from("array")) => {
            out.items = Some(ItemsItem {
                schema: vec![Schema::default()],
            })
        }
        None => {}
    }
    if let Some(values) = v.get("additionalProperties").filter(|a| a.is_object()) {
        out.additional_properties = Some(AdditionalPropertiesItem {
            schema: Some(Box::new(schema(values))),
        });
    }
    out.vendor_extension = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("x-kubernetes-") && *k != "x-kubernetes-validations")
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(yaml(v)),
        })
        .collect();
    out
}

fn named(map: &Map<String, Value>) -> Vec<NamedSchema> {
    map.iter()
        .map(|(k, v)| NamedSchema {
            name: k.clone(),
            value: Some(schema(v)),
        })
        .collect()
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ty = p
                .pointer("/schema/type")
                .and_then(Value::as_str)
                .unwrap_or("string")
                .to_string();
            let non_body = if p["in"] == "path" {
                NonBodyParameter {
                    path_parameter_sub_schema: Some(PathParameter {
                        required: true,
                        r#in: "path".into(),
                        description: text(p, "description"),
                        name: text(p, "name"),
                        r#type: ty,
                        unique_items: true,
                    }),
                    ..Default::default()
                }
            } else {
                NonBodyParameter {
                    query_parameter_sub_schema: Some(QueryParameter {
                        required: false,
                        r#in: "query".into(),
                        description: text(p, "description"),
                        name: text(p, "name"),
                        r#type: ty,
                        unique_items: true,
                    }),
                    ..Default::default()
                }
            };
            ParametersItem {
                parameter: Some(Parameter {
                    non_body_parameter: Some(non_body),
                }),
            }
        })
        .collect()
}

fn op(v: Option<&Value>) -> Option<Operation> {
    let v = v?;
    let returns = v
        .pointer("/responses/200/content/application~1json/schema")
        .map(schema);
    Some(Operation {
        description: text(v, "description"),
        operation_id: text(v, "operationId"),
        parameters: parameters(&v["parameters"]),
        responses: Some(Responses {
            response_code: vec![NamedResponseValue {
                name: "200".into(),
                value: Some(ResponseValue {
                    response: Some(Response {
                        description: "OK".into(),
                        schema: returns.map(|s| SchemaItem { schema: Some(s) }),
                    }),
                }),
            }],
        }),
        vendor_extension: ["x-kubernetes-action", "x-kubernetes-group-version-kind"]
            .iter()
            .filter_map(|k| {
                v.get(*k).map(|x| NamedAny {
                    name: k.to_string(),
                    value: Some(yaml(x)),
                })
            })
            .collect(),
    })
}

/// The whole document.
pub(crate) fn document(reg: &Registry) -> Document {
    let (schemas, paths) = all_schemas_and_paths(reg);
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: crate::openapi::GIT_VERSION.into(),
        }),
        paths: Some(Paths {
            path: paths
                .iter()
                .map(|(name, item)| NamedPathItem {
                    name: name.clone(),
                    value: Some(PathItem {
                        get: op(item.get("get")),
                        put: op(item.get("put")),
                        post: op(item.get("post")),
                        delete: op(item.get("delete")),
                        patch: op(item.get("patch")),
                        parameters: parameters(&item["parameters"]),
                    }),
                })
                .collect(),
        }),
        definitions: Some(Definitions {
            additional_properties: named(&schemas),
        }),
    }
}

/// The document in protobuf.
pub(crate) fn encode(reg: &Registry) -> Vec<u8> {
    document(reg).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_fold_single_references_and_give_every_array_items() {
        let s = schema(&json!({"description": "m", "allOf": [{"$ref": "#/components/schemas/X"}]}));
        assert_eq!(s.xref, "#/definitions/X");
        let s = schema(&json!({"type": "array"}));
        assert_eq!(s.items.unwrap().schema.len(), 1);
        let s =
            schema(&json!({"type": "object", "x-kubernetes-group-version-kind": [{"kind": "K"}]}));
        assert_eq!(
            s.vendor_extension[0].name,
            "x-kubernetes-group-version-kind"
        );
        assert!(
            s.vendor_extension[0]
                .value
                .as_ref()
                .unwrap()
                .yaml
                .contains("kind: K")
        );
    }

    #[test]
    fn the_document_round_trips_through_protobuf() {
        let reg = Registry::default();
        let bytes = encode(&reg);
        let doc = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(doc.swagger, "2.0");
        let names: Vec<&str> = doc
            .definitions
            .as_ref()
            .unwrap()
            .additional_properties
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert!(names.contains(&"io.k8s.api.core.v1.Pod"), "{names:?}");
        assert!(names.contains(&"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }
}
