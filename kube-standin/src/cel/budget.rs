//! The cost budget the API server holds a CRD's rules to when the CRD is written: each rule's
//! estimated cost times the most times its schema node can occur in one object must stay
//! within 10,000,000 (`StaticEstimatedCostLimit`), and the sum over the whole schema within
//! 100,000,000 (`StaticEstimatedCRDCostLimit`); a CRD over either is refused.

use serde_json::Value;

use crate::admission::field_error::{ErrorType, FieldError, quote};
use crate::schema::{AdditionalProperties, Schema};

use super::cost;
use super::decl::{DeclType, unbounded_cardinality};

/// The most one rule (or `messageExpression`) may cost over all the places it runs.
pub const RULE_COST_LIMIT: u64 = 10_000_000;
/// The most all the rules of one schema may cost together.
pub const SCHEMA_COST_LIMIT: u64 = 100_000_000;
/// The rules named when the total is over its limit.
const MOST_EXPENSIVE_NAMED: usize = 4;

/// One rule's estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCost {
    /// Where the rule is, as the API server names it (`…x-kubernetes-validations[0].rule`).
    pub path: String,
    pub rule: String,
    /// The worst case of one evaluation.
    pub cost: u64,
    /// The most times the rule's node can occur in one object.
    pub cardinality: u64,
    /// `cost × cardinality`, what the limit applies to.
    pub total: u64,
}

/// The estimated costs of the rules of a CustomResourceDefinition (JSON or YAML read into a
/// value), each version's schema in turn, and the API server's errors for those over budget;
/// an error when the CRD's schemas cannot be read.
pub fn rule_costs(crd: &Value) -> Result<(Vec<RuleCost>, Vec<String>), String> {
    let mut costs = Vec::new();
    let mut errors = Vec::new();
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    for (i, v) in versions.into_iter().flatten().enumerate() {
        let doc = v
            .pointer("/schema/openAPIV3Schema")
            .ok_or_else(|| format!("spec.versions[{i}] has no schema.openAPIV3Schema"))?;
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let mut schema = Schema::parse(doc).map_err(|e| format!("{path}: {e}"))?;
        let mut problems = Vec::new();
        schema.compile(&path, true, &mut problems);
        let (c, e) = check(&schema, &path);
        costs.extend(c);
        errors.extend(problems.iter().chain(&e).map(ToString::to_string));
    }
    Ok((costs, errors))
}

/// Every rule's estimate under `schema` (at `path` in the CRD), and the errors of the rules
/// and of the schema over budget.
pub(crate) fn check(schema: &Schema, path: &str) -> (Vec<RuleCost>, Vec<FieldError>) {
    let mut costs = Vec::new();
    let mut errors = Vec::new();
    walk(schema, path, Some(1), true, &mut costs, &mut errors);
    let total = costs
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.total));
    if total > SCHEMA_COST_LIMIT {
        // The dearest rules of at least 1% of the limit.
        let mut expensive: Vec<&RuleCost> = costs
            .iter()
            .filter(|c| c.total >= SCHEMA_COST_LIMIT / 100)
            .collect();
        expensive.sort_by_key(|c| std::cmp::Reverse(c.total));
        for c in expensive.into_iter().take(MOST_EXPENSIVE_NAMED) {
            errors.push(FieldError::new(
                ErrorType::Forbidden,
                &c.path,
                None,
                "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
            ));
        }
        errors.push(FieldError::new(
            ErrorType::Forbidden,
            path,
            None,
            &over_budget(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                total,
                SCHEMA_COST_LIMIT,
            ),
        ));
    }
    (costs, errors)
}

/// `cardinality` is `None` below a list or map without a bound.
fn walk(
    s: &Schema,
    path: &str,
    cardinality: Option<u64>,
    root: bool,
    costs: &mut Vec<RuleCost>,
    errors: &mut Vec<FieldError>,
) {
    let decl = if root {
        DeclType::resource_root(s)
    } else {
        DeclType::of(s)
    };
    if let Some(decl) = &decl
        && !s.rules.is_empty()
    {
        let cardinality =
            cardinality.unwrap_or_else(|| unbounded_cardinality(decl.min_serialized_size));
        for (i, rule) in s.rules.iter().enumerate() {
            let at = format!("{path}.x-kubernetes-validations[{i}]");
            // A rule runs once for each place its node occurs; the API server estimates a
            // messageExpression once.
            let expressions = [
                ("rule", &rule.spec.rule, rule.program(), cardinality),
                (
                    "messageExpression",
                    &rule.spec.message_expression,
                    rule.message_program(),
                    1,
                ),
            ];
            for (field, source, program, times) in expressions {
                let Some(program) = program else { continue };
                let field_path = format!("{at}.{field}");
                let estimate = match cost::estimate(program.expression(), decl) {
                    Ok(e) => e,
                    Err(type_errors) => {
                        errors.push(FieldError::invalid(
                            &field_path,
                            Some(quote(source)),
                            &format!("compilation failed: ERROR: {}", type_errors.join("; ")),
                        ));
                        continue;
                    }
                };
                let total = estimate.max.saturating_mul(times);
                if total > RULE_COST_LIMIT {
                    errors.push(FieldError::new(
                        ErrorType::Forbidden,
                        &field_path,
                        None,
                        &over_budget(&format!("estimated {field} cost"), total, RULE_COST_LIMIT),
                    ));
                }
                costs.push(RuleCost {
                    path: field_path,
                    rule: source.clone(),
                    cost: estimate.max,
                    cardinality: times,
                    total,
                });
            }
        }
    }
    for (name, prop) in &s.properties {
        walk(
            prop,
            &format!("{path}.properties[{name}]"),
            cardinality,
            false,
            costs,
            errors,
        );
    }
    if let Some(items) = &s.items {
        walk(
            items,
            &format!("{path}.items"),
            bounded(cardinality, s.max_items),
            false,
            costs,
            errors,
        );
    }
    if let Some(AdditionalProperties::Schema(values)) = &s.additional_properties {
        walk(
            values,
            &format!("{path}.additionalProperties"),
            bounded(cardinality, s.max_properties),
            false,
            costs,
            errors,
        );
    }
}

fn bounded(cardinality: Option<u64>, max: Option<u64>) -> Option<u64> {
    Some(cardinality?.saturating_mul(max?))
}

/// The API server's words for a cost over its limit (`getCostErrorMessage`).
fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_root(root: Value) -> (Vec<RuleCost>, Vec<String>) {
        let mut schema = Schema::parse(&root).unwrap();
        let mut problems = Vec::new();
        schema.compile("openAPIV3Schema", true, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let (costs, errors) = check(&schema, "openAPIV3Schema");
        (costs, errors.iter().map(ToString::to_string).collect())
    }

    fn with_foo(foo: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"foo": foo}}}})
    }

    /// The examples of Kubernetes' documentation ("Resource use by validation functions").
    #[test]
    fn the_documentations_examples_are_refused_and_allowed_alike() {
        let rule = json!([{"rule": "self.all(x, x.contains('a string'))"}]);
        let (_, errors) = check_root(with_foo(json!({
            "type": "array", "items": {"type": "string"}, "x-kubernetes-validations": rule
        })));
        assert_eq!(
            errors[0],
            "openAPIV3Schema.properties[spec].properties[foo].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
        let (costs, errors) = check_root(with_foo(json!({
            "type": "array", "maxItems": 25, "items": {"type": "string", "maxLength": 10},
            "x-kubernetes-validations": rule
        })));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(costs[0].total, 202);
        // Integers are cheap to compare: allowed unbounded.
        let (costs, errors) = check_root(with_foo(json!({
            "type": "array", "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": "self.all(x, x == 5)"}]
        })));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(costs[0].total, 6_291_454);
        // The same rule below an unbounded list runs once per item: refused.
        let (costs, errors) = check_root(with_foo(json!({
            "type": "array", "items": {"type": "array", "items": {"type": "integer"},
                "x-kubernetes-validations": [{"rule": "self.all(x, x == 5)"}]}
        })));
        assert_eq!(costs[0].cardinality, 1_048_576);
        assert!(errors[0].contains("more than 100x"), "{errors:?}");
    }

    /// A rule on the items of a bounded list, with the factor the API server reports for it.
    #[test]
    fn a_rule_over_budget_reports_the_factor() {
        let text = json!({"type": "string", "maxLength": 4096});
        let (costs, errors) = check_root(json!({"type": "object", "properties": {"cases": {
            "type": "array", "maxItems": 20, "items": {"type": "object",
                "properties": {"message": text, "expect": {"type": "object", "properties": {"contains": text}}},
                "x-kubernetes-validations": [{"rule": "!self.message.contains(self.expect.contains)"}]}
        }}}));
        assert_eq!(costs[0].cost, 2_686_327);
        assert_eq!(costs[0].total, 53_726_540);
        assert!(
            errors[0].ends_with("Forbidden: estimated rule cost exceeds budget by factor of 5.4x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"),
            "{errors:?}"
        );
    }

    /// Rules each within budget whose sum is not: the dearest are named, then the total.
    #[test]
    fn the_schema_total_is_limited_too() {
        let rule = json!([{"rule": "self.all(x, x == 5)"}]);
        let props: serde_json::Map<String, Value> = (0..20)
            .map(|i| {
                (
                    format!("f{i}"),
                    json!({"type": "array", "items": {"type": "integer"}, "x-kubernetes-validations": rule}),
                )
            })
            .collect();
        let (costs, errors) = check_root(json!({"type": "object", "properties": props}));
        assert_eq!(costs.len(), 20);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[..4]
                .iter()
                .all(|e| e.contains("contributed to estimated rule cost total"))
        );
        assert_eq!(
            errors[4],
            "openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1.258291x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
    }

    #[test]
    fn message_expressions_are_estimated_once() {
        let (costs, errors) = check_root(with_foo(json!({
            "type": "array", "maxItems": 10,
            "items": {"type": "string", "maxLength": 10, "x-kubernetes-validations": [
                {"rule": "self.size() > 0", "messageExpression": "'bad: ' + self"}
            ]}
        })));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((costs[0].cardinality, costs[1].cardinality), (10, 1));
        // A concatenation with a value of unknown size cannot be bounded.
        let (_, errors) = check_root(with_foo(json!({
            "type": "integer",
            "x-kubernetes-validations": [{"rule": "self > 0", "messageExpression": "'bad: ' + string(self)"}]
        })));
        assert!(
            errors[0].contains("x-kubernetes-validations[0].messageExpression: Forbidden: estimated messageExpression cost exceeds budget by factor of more than 100x"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_jobs_crd_is_within_budget() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/multitasktrainingjobs.yaml"
        ))
        .unwrap();
        let crd: Value = serde_yaml::from_str(&text).unwrap();
        let (costs, errors) =
            check_root(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone());
        for c in &costs {
            println!(
                "{:>12} × {:>9} = {:>12}  {}",
                c.cost, c.cardinality, c.total, c.path
            );
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}
