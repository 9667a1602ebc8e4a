//! The worst-case cost of a CEL rule, estimated before any object exists, as the API server
//! estimates it when a CustomResourceDefinition is written: cel-go's static cost model
//! (`checker/cost.go`) over the parsed rule, with the sizes of `self`'s lists, maps and
//! strings taken from the schema (`DeclType`) and the Kubernetes function library's own
//! costs. No Rust crate implements this model (kube-cel's estimate is a coarse heuristic),
//! so it is written here, from the upstream Go sources and tested against the costs
//! Kubernetes' own tests publish.
//!
//! The estimator also type-checks what it needs: a rule naming a field the schema does not
//! declare, or a variable that does not exist, fails to compile as it does on the API server.

use std::collections::BTreeMap;

use kube_cel::cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators,
};

use super::decl::{DeclKind, DeclType, MAP_KEY};

/// cel-go's unit costs (`common/cost.go`, `checker/cost.go`).
const SELECT_AND_IDENT_COST: u64 = 1;
const CONST_COST: u64 = 0;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRUCT_CREATE_BASE_COST: u64 = 40;
/// Per byte of a string or element of a list walked.
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
/// Per byte of a regular expression, for each byte of the string it is matched against.
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// `has()`: the API server estimates presence tests at no cost (`PresenceTestHasCost(false)`).
const PRESENCE_TEST_COST: u64 = 0;

/// A range of costs or of sizes, saturating at `u64::MAX` like cel-go's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub min: u64,
    pub max: u64,
}

impl Estimate {
    pub const fn exactly(n: u64) -> Self {
        Self { min: n, max: n }
    }

    const UNKNOWN: Self = Self {
        min: 0,
        max: u64::MAX,
    };

    fn add(self, o: Self) -> Self {
        Self {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }

    fn multiply(self, o: Self) -> Self {
        Self {
            min: self.min.saturating_mul(o.min),
            max: self.max.saturating_mul(o.max),
        }
    }

    fn union(self, o: Self) -> Self {
        Self {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }

    fn by_factor(self, factor: f64) -> Self {
        Self {
            min: by_factor(self.min, factor),
            max: by_factor(self.max, factor),
        }
    }
}

/// `x * factor`, rounded up, saturating (cel-go's `multiplyByCostFactor`).
fn by_factor(x: u64, factor: f64) -> u64 {
    let product = (x as f64 * factor).ceil();
    if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}

/// The checker's type of an expression, as far as the cost model looks at it.
#[derive(Debug, Clone, PartialEq)]
enum Ty<'a> {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Null,
    List(Box<Ty<'a>>),
    Map(Box<Ty<'a>>, Box<Ty<'a>>),
    /// An object of the schema: its fields by CEL name.
    Object(&'a BTreeMap<String, DeclType>),
    /// A type of the Kubernetes library (quantity, URL, IP, ...), or `type`.
    Opaque,
    Dyn,
}

impl<'a> Ty<'a> {
    fn of(d: &'a DeclType) -> Self {
        match &d.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::IntOrString => Ty::Dyn,
            DeclKind::List(items) => Ty::List(Box::new(Ty::of(items))),
            DeclKind::Map(values) => Ty::Map(Box::new(Ty::String), Box::new(Ty::of(values))),
            DeclKind::Object(fields) => Ty::Object(fields),
        }
    }

    /// cel-go's `isScalar`: a value whose size is 1.
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool | Ty::Int | Ty::Uint | Ty::Double | Ty::Duration | Ty::Timestamp
        )
    }

    fn element(&self) -> Ty<'a> {
        match self {
            Ty::List(e) => (**e).clone(),
            Ty::Map(k, _) => (**k).clone(),
            _ => Ty::Dyn,
        }
    }
}

/// What the estimate knows of an expression besides its cost.
#[derive(Debug, Clone)]
struct Node<'a> {
    ty: Ty<'a>,
    /// The field path from `self` (`self.tasks.@items.name`), for sizes from the schema.
    path: Option<Vec<String>>,
    /// A size known from the expression itself (a literal, a concatenation, a comprehension).
    size: Option<Estimate>,
    /// The value of an integer literal (`split`'s limit).
    uint: Option<u64>,
}

impl<'a> Node<'a> {
    fn new(ty: Ty<'a>) -> Self {
        Self {
            ty,
            path: None,
            size: None,
            uint: None,
        }
    }
}

/// A variable in scope: `self`, `oldSelf`, a comprehension's iteration or accumulator variable.
struct Var<'a> {
    name: String,
    node: Node<'a>,
}

/// Estimates one rule.
pub(crate) struct Estimator<'a> {
    root: &'a DeclType,
    vars: Vec<Var<'a>>,
    /// Type errors, worded as the CEL checker words them.
    pub errors: Vec<String>,
}

/// The estimated cost of a rule whose `self` is of type `root`; the type errors when it
/// does not check.
pub(crate) fn estimate(expr: &IdedExpr, root: &DeclType) -> Result<Estimate, Vec<String>> {
    let mut estimator = Estimator::new(root);
    let (_, cost) = estimator.cost(expr);
    if estimator.errors.is_empty() {
        Ok(cost)
    } else {
        Err(estimator.errors)
    }
}

impl<'a> Estimator<'a> {
    fn new(root: &'a DeclType) -> Self {
        let var = |name: &str| Var {
            name: name.to_string(),
            node: Node {
                ty: Ty::of(root),
                path: Some(vec![name.to_string()]),
                size: None,
                uint: None,
            },
        };
        Self {
            root,
            vars: vec![var("self"), var("oldSelf")],
            errors: Vec::new(),
        }
    }

    /// The schema node at a path (the Kubernetes `sizeEstimator`): the first step is the
    /// variable, the others fields, `@items`, `@keys` or `@values`.
    fn decl_at(&self, path: &[String]) -> Option<&'a DeclType> {
        let mut node = self.root;
        for step in path.iter().skip(1) {
            node = match (step.as_str(), &node.kind) {
                ("@items", DeclKind::List(items)) => items,
                ("@values", DeclKind::Map(values)) => values,
                ("@keys", DeclKind::Map(_)) => &MAP_KEY,
                (name, DeclKind::Object(fields)) => fields.get(name)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The schema's bound for a value at `n`'s path.
    fn path_size(&self, n: &Node<'a>) -> Option<Estimate> {
        let path = n.path.as_ref().filter(|p| !p.is_empty())?;
        let decl = self.decl_at(path)?;
        Some(Estimate {
            min: 0,
            max: decl.max_elements,
        })
    }

    /// cel-go's `sizeEstimate`: a computed size, else the schema's bound at the path, else 1
    /// for a scalar, else unknown.
    fn size(&self, n: &Node<'a>) -> Estimate {
        n.size
            .or_else(|| self.path_size(n))
            .unwrap_or(if n.ty.is_scalar() {
                Estimate::exactly(1)
            } else {
                Estimate::UNKNOWN
            })
    }

    /// The Kubernetes library's `sizeEstimate`: as cel-go's, without the scalar rule.
    fn lib_size(&self, n: &Node<'a>) -> Estimate {
        n.size
            .or_else(|| self.path_size(n))
            .unwrap_or(Estimate::UNKNOWN)
    }

    fn cost(&mut self, e: &IdedExpr) -> (Node<'a>, Estimate) {
        match &e.expr {
            Expr::Literal(l) => (literal(l), Estimate::exactly(CONST_COST)),
            Expr::Ident(name) => (self.ident(name), Estimate::exactly(SELECT_AND_IDENT_COST)),
            Expr::Select(sel) => {
                let (operand, operand_cost) = self.cost(&sel.operand);
                if sel.test {
                    self.field(&operand, &sel.field);
                    return (
                        Node::new(Ty::Bool),
                        operand_cost.add(Estimate::exactly(PRESENCE_TEST_COST)),
                    );
                }
                let mut cost = operand_cost;
                if matches!(operand.ty, Ty::Map(..) | Ty::Object(_)) {
                    cost = cost.add(Estimate::exactly(SELECT_AND_IDENT_COST));
                }
                let mut node = Node::new(self.field(&operand, &sel.field));
                node.path = operand.path.map(|mut p| {
                    p.push(sel.field.clone());
                    p
                });
                (node, cost)
            }
            Expr::List(list) => {
                let mut cost = Estimate::exactly(LIST_CREATE_BASE_COST);
                let mut element = None;
                for item in &list.elements {
                    let (n, c) = self.cost(item);
                    cost = cost.add(c);
                    element.get_or_insert(n.ty);
                }
                let mut node = Node::new(Ty::List(Box::new(element.unwrap_or(Ty::Dyn))));
                node.size = Some(Estimate::exactly(list.elements.len() as u64));
                (node, cost)
            }
            Expr::Map(map) => {
                let mut cost = Estimate::exactly(MAP_CREATE_BASE_COST);
                let mut types = None;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        let (k, kc) = self.cost(&m.key);
                        let (v, vc) = self.cost(&m.value);
                        cost = cost.add(kc).add(vc);
                        types.get_or_insert((k.ty, v.ty));
                    }
                }
                let (k, v) = types.unwrap_or((Ty::Dyn, Ty::Dyn));
                let mut node = Node::new(Ty::Map(Box::new(k), Box::new(v)));
                node.size = Some(Estimate::exactly(map.entries.len() as u64));
                (node, cost)
            }
            Expr::Struct(s) => {
                let mut cost = Estimate::exactly(STRUCT_CREATE_BASE_COST);
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        cost = cost.add(self.cost(&f.value).1);
                    }
                }
                (Node::new(Ty::Opaque), cost)
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => self.call(call),
            Expr::Unspecified => (Node::new(Ty::Dyn), Estimate::default()),
        }
    }

    fn ident(&mut self, name: &str) -> Node<'a> {
        match self.vars.iter().rev().find(|v| v.name == name) {
            Some(v) => v.node.clone(),
            None => {
                self.errors.push(format!(
                    "undeclared reference to '{name}' (in container '')"
                ));
                Node::new(Ty::Dyn)
            }
        }
    }

    /// The type of `operand.field`; an error when the schema declares no such field.
    fn field(&mut self, operand: &Node<'a>, field: &str) -> Ty<'a> {
        match &operand.ty {
            Ty::Object(fields) => match fields.get(field) {
                Some(d) => Ty::of(d),
                None => {
                    self.errors.push(format!("undefined field '{field}'"));
                    Ty::Dyn
                }
            },
            Ty::Map(_, v) => (**v).clone(),
            _ => Ty::Dyn,
        }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> (Node<'a>, Estimate) {
        let (range, range_cost) = self.cost(&c.iter_range);
        let (accu, accu_cost) = self.cost(&c.accu_init);
        let mut cost = range_cost.add(accu_cost);
        let step = match &range.ty {
            Ty::List(_) => "@items",
            Ty::Map(..) => "@keys",
            _ => "",
        };
        let iter_path = match (&range.path, step) {
            (_, "") => None,
            (Some(p), s) => Some([p.clone(), vec![s.to_string()]].concat()),
            (None, s) => Some(vec![s.to_string()]),
        };
        let depth = self.vars.len();
        self.vars.push(Var {
            name: c.accu_var.clone(),
            node: Node::new(accu.ty.clone()),
        });
        self.vars.push(Var {
            name: c.iter_var.clone(),
            node: Node {
                path: iter_path,
                ..Node::new(range.ty.element())
            },
        });
        if let Some(v2) = &c.iter_var2 {
            let ty = match &range.ty {
                Ty::Map(_, v) => (**v).clone(),
                _ => Ty::Dyn,
            };
            self.vars.push(Var {
                name: v2.clone(),
                node: Node::new(ty),
            });
        }
        let (_, loop_cost) = self.cost(&c.loop_cond);
        let (_, step_cost) = self.cost(&c.loop_step);
        self.vars.truncate(depth + 1);
        let (result, result_cost) = self.cost(&c.result);
        self.vars.truncate(depth);
        cost = cost.add(result_cost);
        let count = self.size(&range);
        cost = cost.add(count.multiply(step_cost.add(loop_cost)));
        let mut node = Node::new(result.ty);
        // A list or map built by the loop (`map`, `filter`) has at most one entry a step.
        node.size = match &c.accu_init.expr {
            Expr::List(_) | Expr::Map(_) => Some(count),
            Expr::Literal(_) => accu.size,
            _ => None,
        };
        (node, cost)
    }

    fn call(&mut self, call: &CallExpr) -> (Node<'a>, Estimate) {
        let mut args = Vec::with_capacity(call.args.len());
        let mut arg_costs = Vec::with_capacity(call.args.len());
        for a in &call.args {
            let (n, c) = self.cost(a);
            args.push(n);
            arg_costs.push(c);
        }
        let mut cost = Estimate::default();
        let target = call.target.as_ref().map(|t| {
            let (n, c) = self.cost(t);
            cost = cost.add(c);
            n
        });
        let (node, fn_cost) = self.function(&call.func_name, target.as_ref(), &args, &arg_costs);
        (node, cost.add(fn_cost))
    }

    /// The cost of one call (arguments included, the target not) and what it returns:
    /// the Kubernetes library's estimate where it has one, else cel-go's.
    fn function(
        &mut self,
        name: &str,
        target: Option<&Node<'a>>,
        args: &[Node<'a>],
        arg_costs: &[Estimate],
    ) -> (Node<'a>, Estimate) {
        let sum = arg_costs
            .iter()
            .fold(Estimate::default(), |acc, c| acc.add(*c));
        match (name, args) {
            // `&&` and `||` may stop after their first argument; `?:` runs one branch. They
            // add nothing of their own.
            (operators::LOGICAL_AND | operators::LOGICAL_OR, [_, _]) => {
                let (l, r) = (arg_costs[0], arg_costs[1]);
                let cost = Estimate {
                    min: l.min,
                    max: l.add(r).max,
                };
                return (Node::new(Ty::Bool), cost);
            }
            (operators::CONDITIONAL, [_, then, otherwise]) => {
                let mut node = Node::new(then.ty.clone());
                node.size = Some(self.size(then).union(self.size(otherwise)));
                let cost = arg_costs[0].add(arg_costs[1].union(arg_costs[2]));
                return (node, cost);
            }
            _ => {}
        }
        if let Some((node, cost)) = self.library(name, target, args) {
            return (node, cost.add(sum));
        }
        let (node, cost) = self.builtin(name, target, args);
        (node, cost.unwrap_or(Estimate::exactly(1)).add(sum))
    }

    /// cel-go's own estimates (`functionCost`), without the arguments' costs; `None` for a
    /// call of constant cost.
    fn builtin(
        &self,
        name: &str,
        target: Option<&Node<'a>>,
        args: &[Node<'a>],
    ) -> (Node<'a>, Option<Estimate>) {
        let traversal = |n: &Node<'a>| self.size(n).by_factor(STRING_TRAVERSAL_COST_FACTOR);
        let bool_ = |cost: Estimate| (Node::new(Ty::Bool), Some(cost));
        match (name, target, args) {
            (operators::EQUALS | operators::NOT_EQUALS, None, [l, r]) => bool_(self.compare(l, r)),
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                None,
                [l, r],
            ) => {
                let sized = |t: &Ty<'_>| matches!(t, Ty::String | Ty::Bytes);
                let cost = match (&l.ty, &r.ty) {
                    (a, b) if sized(a) || sized(b) => self.compare(l, r),
                    // Undecided overloads: the dearest of them.
                    (Ty::Dyn, Ty::Dyn) => self.compare(l, r).union(Estimate::exactly(1)),
                    _ => Estimate::exactly(1),
                };
                bool_(cost)
            }
            (operators::ADD, None, [l, r]) => {
                let ty = if matches!(l.ty, Ty::Dyn) {
                    r.ty.clone()
                } else {
                    l.ty.clone()
                };
                let size = self.size(l).add(self.size(r));
                let mut node = Node::new(ty.clone());
                let cost = match ty {
                    // Concatenation writes every byte of the result.
                    Ty::String | Ty::Bytes => size.by_factor(STRING_TRAVERSAL_COST_FACTOR),
                    Ty::List(_) => Estimate::exactly(1),
                    Ty::Dyn => size
                        .by_factor(STRING_TRAVERSAL_COST_FACTOR)
                        .union(Estimate::exactly(1)),
                    _ => return (node, None),
                };
                node.size = Some(size);
                (node, Some(cost))
            }
            (operators::IN, None, [_, container]) => match &container.ty {
                Ty::List(_) => bool_(self.size(container)),
                Ty::Map(..) | Ty::Object(_) => bool_(Estimate::exactly(1)),
                _ => bool_(self.size(container).union(Estimate::exactly(1))),
            },
            (operators::INDEX, None, [container, _]) => {
                let (ty, step) = match &container.ty {
                    Ty::List(e) => ((**e).clone(), "@items"),
                    Ty::Map(_, v) => ((**v).clone(), "@values"),
                    _ => (Ty::Dyn, ""),
                };
                let mut node = Node::new(ty);
                if !step.is_empty() {
                    let mut p = container.path.clone().unwrap_or_default();
                    p.push(step.to_string());
                    node.path = Some(p);
                }
                (node, None)
            }
            ("matches", Some(s), [re]) | ("matches", None, [s, re]) => bool_(self.regex(s, re)),
            ("contains", Some(t), [sub]) => bool_(traversal(t).multiply(traversal(sub))),
            ("startsWith" | "endsWith", Some(_), [prefix]) => bool_(traversal(prefix)),
            ("string", None, [b]) if b.ty == Ty::Bytes => {
                let size = self.size(b);
                let mut node = Node::new(Ty::String);
                node.size = Some(Estimate {
                    min: size.min / 4,
                    max: size.max,
                });
                (node, Some(size.by_factor(STRING_TRAVERSAL_COST_FACTOR)))
            }
            ("bytes", None, [s]) if s.ty == Ty::String => {
                let size = self.size(s);
                let mut node = Node::new(Ty::Bytes);
                node.size = Some(Estimate {
                    min: size.min,
                    max: size.max.saturating_mul(4),
                });
                (node, Some(size.by_factor(STRING_TRAVERSAL_COST_FACTOR)))
            }
            ("format", Some(t), _) => (Node::new(Ty::String), Some(traversal(t))),
            ("dyn", None, [x]) => (x.clone(), None),
            _ => (Node::new(result_type(name, target, args)), None),
        }
    }

    /// `==`, `!=` and the orderings of strings and bytes: a walk of the shorter side.
    fn compare(&self, a: &Node<'a>, b: &Node<'a>) -> Estimate {
        let smallest = self.size(a).max.min(self.size(b).max);
        Estimate {
            min: u64::from(smallest > 0),
            max: smallest,
        }
        .by_factor(STRING_TRAVERSAL_COST_FACTOR)
    }

    /// A regular expression run over a string: each byte of the string (and one more) against
    /// each 4 bytes of the expression.
    fn regex(&self, s: &Node<'a>, re: &Node<'a>) -> Estimate {
        let walk = self
            .size(s)
            .add(Estimate::exactly(1))
            .by_factor(STRING_TRAVERSAL_COST_FACTOR);
        walk.multiply(self.size(re).by_factor(REGEX_STRING_LENGTH_COST_FACTOR))
    }

    /// The Kubernetes library's estimates (`library.CostEstimator.EstimateCallCost`), without
    /// the arguments' costs; `None` where it leaves the call to cel-go.
    fn library(
        &self,
        name: &str,
        target: Option<&Node<'a>>,
        args: &[Node<'a>],
    ) -> Option<(Node<'a>, Estimate)> {
        let size = |n: &Node<'a>| self.lib_size(n);
        let traversal = |n: &Node<'a>| size(n).by_factor(STRING_TRAVERSAL_COST_FACTOR);
        let sized = |ty: Ty<'a>, size: Estimate| {
            let mut n = Node::new(ty);
            n.size = Some(size);
            n
        };
        let string = Ty::String;
        Some(match (name, target, args) {
            ("check", ..) => (Node::new(Ty::Opaque), Estimate::exactly(350_000)),
            ("isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf", Some(t), _) => {
                let ty = match name {
                    "isSorted" => Ty::Bool,
                    "indexOf" | "lastIndexOf" => Ty::Int,
                    _ => t.ty.element(),
                };
                let cost = match &t.ty {
                    Ty::List(element) => {
                        // One comparison an element, and a walk of each string or bytes.
                        let mut each = Estimate::exactly(1);
                        if matches!(**element, Ty::String | Ty::Bytes) {
                            let item = Node {
                                path: items_path(t),
                                ..Node::new((**element).clone())
                            };
                            each = each.add(traversal(&item));
                        }
                        size(t).multiply(each)
                    }
                    _ => traversal(t),
                };
                (Node::new(ty), cost)
            }
            ("url", _, [s]) => (Node::new(Ty::Opaque), traversal(s)),
            ("lowerAscii" | "upperAscii" | "substring" | "trim", Some(t), _) => {
                (sized(string, size(t)), traversal(t))
            }
            ("replace", Some(t), [old, new, ..]) => {
                let result = replaced_size(size(t), size(old), size(new));
                (
                    sized(string, result),
                    size(t).by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                )
            }
            ("split", Some(t), _) => {
                let max = match args.get(1).and_then(|n| n.uint) {
                    Some(n) => n,
                    None => size(t).max,
                };
                (
                    sized(Ty::List(Box::new(Ty::String)), Estimate { min: 0, max }),
                    size(t).by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                )
            }
            ("join", Some(t), _) => {
                let item = Node {
                    path: items_path(t),
                    ..Node::new(t.ty.element())
                };
                let items = size(t);
                let mut total = items.multiply(size(&item));
                if let Some(sep) = args.first() {
                    let separators = Estimate {
                        min: items.min.saturating_sub(1),
                        max: items.max.saturating_sub(1),
                    };
                    total = total.add(size(sep).multiply(separators));
                }
                (
                    sized(string, total),
                    total.by_factor(STRING_TRAVERSAL_COST_FACTOR),
                )
            }
            ("find" | "findAll", Some(t), [re, ..]) => {
                let walk = size(t)
                    .add(Estimate::exactly(1))
                    .by_factor(STRING_TRAVERSAL_COST_FACTOR);
                let cost = walk.multiply(size(re).by_factor(REGEX_STRING_LENGTH_COST_FACTOR));
                let ty = if name == "find" {
                    Ty::String
                } else {
                    Ty::List(Box::new(Ty::String))
                };
                (
                    sized(
                        ty,
                        Estimate {
                            min: 0,
                            max: size(t).max,
                        },
                    ),
                    cost,
                )
            }
            // Parsing a string; the library costs global calls as it does member ones.
            ("cidr" | "ip" | "quantity" | "semver", None, [s]) => {
                (Node::new(Ty::Opaque), traversal(s))
            }
            ("isIP" | "isCIDR" | "isQuantity" | "isSemver", None, [s, ..]) => {
                (Node::new(Ty::Bool), traversal(s))
            }
            ("ip", Some(_), []) => (Node::new(Ty::Opaque), Estimate::exactly(1)),
            ("ip.isCanonical", None, [s]) => (
                Node::new(Ty::Bool),
                size(s).by_factor(2.0 * STRING_TRAVERSAL_COST_FACTOR),
            ),
            ("containsIP" | "containsCIDR", Some(_), [other]) => {
                let ip = Estimate { min: 4, max: 16 };
                let mut cost = ip.add(ip).by_factor(STRING_TRAVERSAL_COST_FACTOR);
                if name == "containsCIDR" {
                    cost = cost
                        .add(ip.by_factor(STRING_TRAVERSAL_COST_FACTOR))
                        .add(Estimate::exactly(1));
                }
                if other.ty == Ty::String {
                    cost = cost.add(traversal(other));
                }
                (Node::new(Ty::Bool), cost)
            }
            (
                "serviceAccount"
                | "path"
                | "group"
                | "resource"
                | "subresource"
                | "namespace"
                | "name"
                | "allowed"
                | "reason"
                | "error"
                | "errored"
                | "masked"
                | "prefixLength"
                | "family"
                | "isUnspecified"
                | "isLoopback"
                | "isLinkLocalMulticast"
                | "isLinkLocalUnicast"
                | "sign"
                | "asInteger"
                | "isInteger"
                | "asApproximateFloat"
                | "isGreaterThan"
                | "isLessThan"
                | "compareTo"
                | "add"
                | "sub",
                Some(_),
                _,
            ) => (
                Node::new(result_type(name, target, args)),
                Estimate::exactly(1),
            ),
            ("sets.contains" | "sets.intersects" | "sets.equivalent", None, [a, b]) => {
                let factor = if name == "sets.equivalent" { 2.0 } else { 1.0 };
                let cost = self
                    .size(a)
                    .multiply(self.size(b))
                    .by_factor(factor)
                    .add(Estimate::exactly(1));
                (Node::new(Ty::Bool), cost)
            }
            _ => return None,
        })
    }
}

/// The size of `s.replace(old, new)` (the library's estimate).
fn replaced_size(s: Estimate, old: Estimate, new: Estimate) -> Estimate {
    let (most, most_kept) = if old.min == 0 {
        (if s.max < u64::MAX { s.max + 1 } else { s.max }, s.max)
    } else if new.max <= old.min {
        (0, s.max)
    } else {
        ((s.max as f64 / old.min as f64).ceil() as u64, 0)
    };
    let (least, least_kept) = if old.max == 0 {
        (if s.min < u64::MAX { s.min + 1 } else { s.min }, s.min)
    } else if old.max <= new.min {
        (0, s.min)
    } else {
        ((s.min as f64 / old.max as f64).ceil() as u64, 0)
    };
    Estimate {
        min: least,
        max: most,
    }
    .multiply(new)
    .add(Estimate {
        min: least_kept,
        max: most_kept,
    })
}

/// A literal: its type and size (characters of a string, bytes, 1 for the rest).
fn literal(l: &LiteralValue) -> Node<'static> {
    let uint = match l {
        LiteralValue::Int(i) => u64::try_from(**i).ok(),
        LiteralValue::UInt(u) => Some(**u),
        _ => None,
    };
    let (ty, size) = match l {
        LiteralValue::Boolean(_) => (Ty::Bool, 1),
        LiteralValue::Int(_) => (Ty::Int, 1),
        LiteralValue::UInt(_) => (Ty::Uint, 1),
        LiteralValue::Double(_) => (Ty::Double, 1),
        LiteralValue::Null => (Ty::Null, 1),
        LiteralValue::String(s) => (Ty::String, s.inner().chars().count() as u64),
        LiteralValue::Bytes(b) => (Ty::Bytes, b.inner().len() as u64),
    };
    Node {
        size: Some(Estimate::exactly(size)),
        uint,
        ..Node::new(ty)
    }
}

/// The path of a list's elements, where the list has one.
fn items_path(list: &Node<'_>) -> Option<Vec<String>> {
    list.path.clone().map(|mut p| {
        p.push("@items".into());
        p
    })
}

/// The result type of a function the cost model charges one unit.
fn result_type<'a>(name: &str, target: Option<&Node<'a>>, args: &[Node<'a>]) -> Ty<'a> {
    let first = || {
        target
            .or(args.first())
            .map(|n| n.ty.clone())
            .unwrap_or(Ty::Dyn)
    };
    match name {
        operators::LOGICAL_NOT
        | operators::NOT_STRICTLY_FALSE
        | "has"
        | "isInteger"
        | "isGreaterThan"
        | "isLessThan"
        | "isLoopback"
        | "isUnspecified"
        | "isLinkLocalMulticast"
        | "isLinkLocalUnicast"
        | "isGlobalUnicast"
        | "containsIP"
        | "containsCIDR"
        | "bool" => Ty::Bool,
        "size" | "int" | "compareTo" | "sign" | "asInteger" | "major" | "minor" | "patch"
        | "family" | "getMilliseconds" | "getSeconds" | "getMinutes" | "getHours"
        | "getDayOfWeek" | "getDayOfMonth" | "getDayOfYear" | "getDate" | "getMonth"
        | "getFullYear" | "prefixLength" => Ty::Int,
        "uint" => Ty::Uint,
        "double" | "asApproximateFloat" => Ty::Double,
        "charAt"
        | "getScheme"
        | "getHost"
        | "getHostname"
        | "getPort"
        | "getEscapedPath"
        | "format"
        | "strings.quote"
        | "base64.encode"
        | "jsonpatch.escapeKey" => Ty::String,
        "base64.decode" => Ty::Bytes,
        "duration" => Ty::Duration,
        "timestamp" => Ty::Timestamp,
        "getQuery" => Ty::Map(
            Box::new(Ty::String),
            Box::new(Ty::List(Box::new(Ty::String))),
        ),
        "type" | "add" | "sub" | "ip" | "cidr" | "masked" => Ty::Opaque,
        operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE
        | "dyn"
        | "reverse"
        | "slice"
        | "sort"
        | "distinct" => first(),
        _ => Ty::Dyn,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::schema::Schema;

    /// The estimated cost of `rule` with `self` of `schema`.
    fn cost(rule: &str, schema: &Value) -> u64 {
        let decl = DeclType::of(&Schema::parse(schema).unwrap()).unwrap();
        let program = kube_cel::cel::Program::compile(rule).unwrap();
        estimate(program.expression(), &decl)
            .unwrap_or_else(|e| panic!("{rule}: {e:?}"))
            .max
    }

    fn bound(mut s: Value, key: &str, n: Option<u64>) -> Value {
        if let Some(n) = n {
            s[key] = json!(n);
        }
        s
    }
    fn list(items: Value, n: Option<u64>) -> Value {
        bound(json!({"type": "array", "items": items}), "maxItems", n)
    }
    fn map(values: Value, n: Option<u64>) -> Value {
        bound(
            json!({"type": "object", "additionalProperties": values}),
            "maxProperties",
            n,
        )
    }
    fn string(n: Option<u64>) -> Value {
        bound(json!({"type": "string"}), "maxLength", n)
    }
    fn typed(t: &str) -> Value {
        json!({"type": t})
    }
    fn formatted(format: &str) -> Value {
        json!({"type": "string", "format": format})
    }
    fn int_or_string() -> Value {
        json!({"x-kubernetes-int-or-string": true})
    }
    fn object(props: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": props, "required": required})
    }

    /// Kubernetes' `TestCostEstimation` (apiextensions-apiserver `schema/cel/compilation_test.go`):
    /// each rule's MaxCost with the schema's bounds unset and set to N.
    #[test]
    fn costs_match_the_api_servers_published_estimates() {
        type Gen = fn(Option<u64>) -> Value;
        let rows: &[(Gen, &str, u64, u64, u64)] = &[
            (
                |n| list(typed("number"), n),
                "self.all(x, true)",
                4_718_591,
                10,
                32,
            ),
            (
                |n| list(string(None), n),
                "self.all(x, true)",
                3_145_727,
                20,
                62,
            ),
            (
                |n| list(typed("boolean"), n),
                "self.all(x, true)",
                1_887_437,
                5,
                17,
            ),
            (
                |n| list(list(typed("number"), None), n),
                "self.all(x, true)",
                3_145_727,
                100,
                302,
            ),
            (
                |n| {
                    list(
                        object(
                            json!({"required": {"type": "string"}, "optional": {"type": "string"}}),
                            &["required"],
                        ),
                        n,
                    )
                },
                "self.all(x, true)",
                555_128,
                50,
                152,
            ),
            (
                |n| map(typed("number"), n),
                "self.all(x, true)",
                1_348_169,
                10,
                32,
            ),
            (
                |n| map(string(None), n),
                "self.all(x, true)",
                1_179_647,
                3,
                11,
            ),
            (
                |n| map(typed("boolean"), n),
                "self.all(x, true)",
                943_718,
                100,
                302,
            ),
            (string, "self.contains('test')", 314_574, 10, 5),
            (string, "self.startsWith('test')", 2, 15, 2),
            (string, "self.endsWith('test')", 2, 30, 2),
            (
                string,
                "size(self + \"hello\") > size(\"hello\")",
                314_578,
                4,
                7,
            ),
            (|n| list(typed("number"), n), "self[1] == 0.0", 2, 5000, 2),
            (
                |n| list(string(None), n),
                "self[1] == self[1]",
                314_577,
                8,
                314_577,
            ),
            (
                |n| list(typed("number"), n),
                "self.all(x, self.all(y, true))",
                0,
                10,
                352,
            ),
            (
                |n| list(typed("number"), n),
                "self.all(x, self.all(y, self.all(z, true)))",
                0,
                10,
                3_552,
            ),
            (string, "self.matches(\"x\")", 314_574, 50, 22),
            (
                string,
                "\"\".matches(\"(((((((((())))))))))[0-9]\")",
                7,
                10,
                7,
            ),
            (string, "self.matches(\"\")", 1, 100, 1),
            (
                |n| map(string(n), n),
                "self.all(x, x.contains(self[x]))",
                2_752_507,
                10,
                72,
            ),
            (string, "self == \"x\"", 2, 0, 1),
            (
                |n| bound(formatted("byte"), "maxLength", n),
                "self == b\"x\"",
                2,
                0,
                1,
            ),
            (
                |n| list(typed("number"), n),
                "self.all(x, x == 0.0)",
                6_291_454,
                6_291_456,
                25_165_826,
            ),
            (
                |n| {
                    let inner = bound(
                        object(json!({"required": string(n)}), &["required"]),
                        "maxProperties",
                        n,
                    );
                    list(map(inner, n), n)
                },
                "self.all(x, x[\"y\"].required == \"z\")",
                7_340_027,
                10,
                72,
            ),
            (
                |n| list(int_or_string(), n),
                "self.all(x, true)",
                4_718_591,
                10,
                32,
            ),
            (|n| list(int_or_string(), n), "self[0] == 5", 3, 10, 3),
            (
                |n| list(map(typed("number"), None), n),
                "self.all(x, x.y == 25.2)",
                6_291_452,
                12,
                74,
            ),
            (
                |n| list(formatted("duration"), n),
                "self.all(x, true)",
                2_359_295,
                5,
                17,
            ),
            (
                |n| list(formatted("date"), n),
                "self.all(x, true)",
                725_936,
                15,
                47,
            ),
            (
                |n| list(formatted("date-time"), n),
                "self.all(x, true)",
                428_963,
                25,
                77,
            ),
            (
                |n| {
                    map(
                        object(json!({"required": {"type": "string"}}), &["required"]),
                        n,
                    )
                },
                "self.all(x, true)",
                428_963,
                20,
                62,
            ),
            (
                |n| map(formatted("duration"), n),
                "self.all(x, true)",
                1_048_577,
                5,
                17,
            ),
            (
                |n| map(formatted("date-time"), n),
                "self.all(x, true)",
                349_526,
                25,
                77,
            ),
            (string, "self.find('[0-9]+') == ''", 629_147, 10, 11),
            (
                |n| list(string(n), n),
                "self.join(' ') == 'aa bb'",
                329_853_068_905,
                10,
                43,
            ),
            (
                |n| list(string(n), n),
                "self.isSorted() == true",
                329_854_432_052,
                10,
                52,
            ),
            (
                |n| {
                    object(
                        json!({"str": string(n), "before": string(Some(2)), "after": string(Some(4))}),
                        &[],
                    )
                },
                "self.str.replace(self.before, self.after) == 'does not matter'",
                629_154,
                4,
                12,
            ),
            (
                |n| object(json!({"str": string(n), "separator": string(n)}), &[]),
                "self.str.split(self.separator) == []",
                629_160,
                10,
                22,
            ),
            (string, "self.lowerAscii() == 'lower!'", 314_575, 10, 6),
            (
                |n| map(typed("integer"), n),
                "oldSelf.size() == self.size()",
                5,
                10,
                5,
            ),
            (
                |n| map(formatted("date-time"), n),
                "self[\"a\"] == self[\"b\"]",
                8,
                7,
                8,
            ),
            (
                |n| map(formatted("duration"), n),
                "self[\"c\"] == self[\"d\"]",
                8,
                42,
                8,
            ),
            (
                |n| {
                    bound(
                        json!({"type": "string", "enum": ["A", "B", "C", "LongValue"]}),
                        "maxLength",
                        n,
                    )
                },
                "self.contains('A')",
                2,
                1000,
                401,
            ),
        ];
        let mut wrong = Vec::new();
        for (schema, rule, unbounded, n, bounded) in rows {
            let open = cost(rule, &schema(None));
            // Kubernetes checks only that the nested loops are over 100,000,000.
            let open_ok = if *unbounded == 0 {
                open > 100_000_000
            } else {
                open == *unbounded
            };
            let closed = cost(rule, &schema(Some(*n)));
            if !open_ok || closed != *bounded {
                wrong.push(format!(
                    "{rule}: {open} (want {unbounded}), with {n}: {closed} (want {bounded})"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(rows.len() >= 40);
    }

    #[test]
    fn macros_and_operators_cost_as_cel_go_expands_them() {
        let strings = list(string(Some(10)), Some(10));
        // all: 1 + N·(3 + P); exists: 1 + N·(4 + P); exists_one: 2 + N·(P + 2)
        assert_eq!(
            cost("self.all(x, x == 'a')", &strings),
            1 + 10 * (3 + 2) + 1
        );
        assert_eq!(
            cost("self.exists(x, x == 'a')", &strings),
            1 + 10 * (4 + 2) + 1
        );
        assert_eq!(
            cost("self.exists_one(x, x == 'a')", &strings),
            1 + 2 + 10 * (2 + 2)
        );
        // map then exists: the mapped list has as many elements as the source.
        let ints = list(typed("integer"), Some(10));
        assert_eq!(cost("self.map(x, x * 2).exists(y, y > 5)", &ints), 213);
        assert_eq!(cost("'foo' in self", &list(string(None), None)), 1_048_576);
        let pair = object(
            json!({"min": typed("integer"), "max": typed("integer")}),
            &[],
        );
        assert_eq!(cost("self.min <= self.max", &pair), 5);
        // has() costs its operand only; the ternary its dearer branch.
        let foo = object(json!({"foo": string(None)}), &[]);
        assert_eq!(cost("has(self.foo) ? self.foo.size() > 0 : true", &foo), 5);
        assert_eq!(cost("self == oldSelf", &string(Some(10))), 6);
    }

    #[test]
    fn undeclared_fields_and_variables_do_not_compile() {
        let decl =
            DeclType::of(&Schema::parse(&object(json!({"a": typed("integer")}), &[])).unwrap())
                .unwrap();
        let check = |rule: &str| {
            estimate(
                kube_cel::cel::Program::compile(rule).unwrap().expression(),
                &decl,
            )
        };
        assert!(check("self.a > 0 && has(self.a)").is_ok());
        let err = check("self.b > 0").unwrap_err();
        assert_eq!(err, ["undefined field 'b'"]);
        let err = check("other.a > 0").unwrap_err();
        assert!(
            err[0].contains("undeclared reference to 'other'"),
            "{err:?}"
        );
        // Comprehension variables are declared inside their loop only.
        let list = DeclType::of(&Schema::parse(&list(typed("integer"), None)).unwrap()).unwrap();
        let ok = estimate(
            kube_cel::cel::Program::compile("self.all(x, x > 0)")
                .unwrap()
                .expression(),
            &list,
        );
        assert!(ok.is_ok());
    }
}
