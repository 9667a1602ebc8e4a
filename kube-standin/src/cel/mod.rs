//! `x-kubernetes-validations`: CEL rules compiled with the `cel` interpreter, evaluated with
//! the Kubernetes function library (`kube-cel`) over values typed by the structural schema,
//! with `self`, `oldSelf` (transition rules) and `messageExpression` as the API server has them.

use std::sync::Arc;

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, ExecutionError, Program, Value as Cel};
use serde::{Deserialize, Serialize};

pub(crate) mod budget;
pub(crate) mod cost;
pub(crate) mod decl;
pub(crate) mod values;

/// One `x-kubernetes-validations` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ValidationRule {
    pub rule: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub message_expression: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub field_path: String,
    pub optional_old_self: Option<bool>,
}

/// A rule with its programs.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub spec: ValidationRule,
    program: Arc<Program>,
    message: Option<Arc<Program>>,
    /// Uses `oldSelf`: evaluated only on updates, where an old value correlates.
    pub transition: bool,
}

/// Why a rule did not pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The rule evaluated to false; the message to report.
    Rejected(String),
    /// The `messageExpression` evaluated to something the API server refuses.
    BadMessage(String),
    /// The rule could not be evaluated (no such key, overflow, a non-boolean result, ...).
    Error(String),
}

impl CompiledRule {
    /// Compiles a rule; an error names the field at fault (`rule`, `messageExpression`),
    /// its value and what is wrong.
    pub(crate) fn compile(rule: &ValidationRule) -> Result<Self, (&'static str, String, String)> {
        let program = Program::compile(&rule.rule).map_err(|e| {
            (
                "rule",
                rule.rule.clone(),
                format!("compilation failed: {e}"),
            )
        })?;
        let message = if rule.message_expression.is_empty() {
            None
        } else {
            let p = Program::compile(&rule.message_expression).map_err(|e| {
                (
                    "messageExpression",
                    rule.message_expression.clone(),
                    format!("messageExpression compilation failed: {e}"),
                )
            })?;
            Some(Arc::new(p))
        };
        let transition = program.references().has_variable("oldSelf");
        Ok(Self {
            spec: rule.clone(),
            program: Arc::new(program),
            message,
            transition,
        })
    }

    /// The rule's parsed program.
    pub(crate) fn program(&self) -> Option<&Program> {
        Some(&self.program)
    }

    /// The parsed `messageExpression`, when there is one.
    pub(crate) fn message_program(&self) -> Option<&Program> {
        self.message.as_deref()
    }

    /// The message of a failed rule without a usable `messageExpression`.
    fn static_message(&self) -> String {
        if self.spec.message.is_empty() {
            format!("failed rule: {}", self.spec.rule.trim())
        } else {
            self.spec.message.clone()
        }
    }

    /// Evaluates the rule with `self` (and `oldSelf` for transition rules).
    pub(crate) fn evaluate(&self, this: &Cel, old: Option<&Cel>) -> Result<(), Failure> {
        BASE.with(|base| {
            let mut ctx = base.new_inner_scope();
            ctx.add_variable_from_value("self", this.clone());
            match old {
                Some(o) => ctx.add_variable_from_value("oldSelf", o.clone()),
                None if self.spec.optional_old_self == Some(true) => {
                    ctx.add_variable_from_value("oldSelf", Cel::Null)
                }
                None => {}
            }
            match self.program.execute(&ctx) {
                Ok(Cel::Bool(true)) => Ok(()),
                Ok(Cel::Bool(false)) => Err(self.failure_message(&ctx)),
                Ok(other) => Err(Failure::Error(format!(
                    "rule evaluated to {:?}, not a bool, evaluating rule: {}",
                    other.type_of().to_string(),
                    self.spec.rule.trim()
                ))),
                Err(e) => Err(Failure::Error(execution_error(&e, &self.spec.rule))),
            }
        })
    }

    fn failure_message(&self, ctx: &Context<'_>) -> Failure {
        let Some(program) = &self.message else {
            return Failure::Rejected(self.static_message());
        };
        match program.execute(ctx) {
            Ok(Cel::String(s)) if s.trim().is_empty() => Failure::BadMessage(
                "messageExpression should evaluate to a non-empty string".into(),
            ),
            Ok(Cel::String(s)) if s.contains('\n') => {
                Failure::BadMessage("messageExpression should not contain line breaks".into())
            }
            Ok(Cel::String(s)) => Failure::Rejected(s.to_string()),
            Ok(_) => Failure::BadMessage("messageExpression must evaluate to a string".into()),
            // The API server logs the failed messageExpression and reports the static message.
            Err(_) => Failure::Rejected(self.static_message()),
        }
    }
}

fn execution_error(e: &ExecutionError, rule: &str) -> String {
    match e {
        ExecutionError::NoSuchOverload => format!(
            "'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {}",
            rule.trim()
        ),
        ExecutionError::NoSuchKey(k) => {
            format!("no such key: {k} evaluating rule: {}", rule.trim())
        }
        other => format!("{other} evaluating rule: {}", rule.trim()),
    }
}

thread_local! {
    /// The CEL standard library plus Kubernetes' (quantity, lists, strings, regex, url, ...).
    static BASE: Context<'static> = Context::default().with_all();
}

/// CEL keywords a property name must be escaped from (`__keyword__`), as the API server does.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL name of an object property, or `None` when it cannot be named in CEL.
pub(crate) fn escape_property(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first = chars.next()?;
    let ok_first = first.is_ascii_alphabetic() || matches!(first, '_' | '.' | '-' | '/');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if !ok_first || !ok_rest {
        return None;
    }
    Some(
        name.replace("__", "__underscores__")
            .replace('.', "__dot__")
            .replace('-', "__dash__")
            .replace('/', "__slash__"),
    )
}

#[cfg(test)]
mod tests {
    use super::values::to_cel;
    use super::*;
    use crate::schema::Schema;
    use serde_json::Value;
    use serde_json::json;

    fn rule(rule: &str, message: &str, message_expression: &str) -> CompiledRule {
        CompiledRule::compile(&ValidationRule {
            rule: rule.into(),
            message: message.into(),
            message_expression: message_expression.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn schema(v: Value) -> Schema {
        Schema::parse(&v).unwrap()
    }

    #[test]
    fn rules_see_typed_values_and_kubernetes_functions() {
        let s = schema(json!({"type": "object", "properties": {
            "n": {"type": "number"}, "i": {"type": "integer"},
            "q": {"type": "string"}, "names": {"type": "array", "items": {"type": "string"}}
        }}));
        let v = to_cel(
            &json!({"n": 3, "i": 3, "q": "500Mi", "names": ["a", "b"]}),
            Some(&s),
        );
        assert_eq!(
            rule("self.n == 3.0 && self.i == 3", "", "").evaluate(&v, None),
            Ok(())
        );
        assert_eq!(
            rule("quantity(self.q).isLessThan(quantity('1Gi'))", "", "").evaluate(&v, None),
            Ok(())
        );
        assert_eq!(
            rule(
                "self.names.all(x, self.names.exists_one(y, y == x))",
                "",
                ""
            )
            .evaluate(&v, None),
            Ok(())
        );
    }

    #[test]
    fn messages_transition_rules_and_errors() {
        let s = schema(json!({"type": "object", "properties": {"a": {"type": "integer"}}}));
        let new = to_cel(&json!({"a": 2}), Some(&s));
        let old = to_cel(&json!({"a": 1}), Some(&s));
        let immutable = rule("self == oldSelf", "a is immutable", "");
        assert!(immutable.transition);
        assert_eq!(
            immutable.evaluate(&new, Some(&old)),
            Err(Failure::Rejected("a is immutable".into()))
        );
        assert_eq!(immutable.evaluate(&new, Some(&new)), Ok(()));
        let expr = rule("self.a < 2", "static", "'a is ' + string(self.a)");
        assert_eq!(
            expr.evaluate(&new, None),
            Err(Failure::Rejected("a is 2".into()))
        );
        assert_eq!(
            rule("self.a < 2", "", "").evaluate(&new, None),
            Err(Failure::Rejected("failed rule: self.a < 2".into()))
        );
        let missing = rule("self.b > 0", "", "").evaluate(&new, None);
        assert!(
            matches!(&missing, Err(Failure::Error(m)) if m.contains("evaluating rule: self.b > 0")),
            "{missing:?}"
        );
    }

    #[test]
    fn property_names_are_escaped_like_the_api_server() {
        assert_eq!(
            escape_property("namespace").as_deref(),
            Some("__namespace__")
        );
        assert_eq!(
            escape_property("a-b.c/d").as_deref(),
            Some("a__dash__b__dot__c__slash__d")
        );
        assert_eq!(
            escape_property("a__b").as_deref(),
            Some("a__underscores__b")
        );
        assert_eq!(escape_property("a b"), None);
    }
}
