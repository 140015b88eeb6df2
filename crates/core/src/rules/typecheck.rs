//! Type check: resolves names against the feature catalog, checks every operator and
//! function against the types of its operands, and builds the typed trees of [`compile`].
//!
//! Every error of a condition is reported, not only the first: a sub-expression with an error
//! has no type, and the operators around it stay silent about it instead of cascading.
//!
//! [`compile`]: super::compile

use super::compile::{ArithOp, BoolNode, CmpOp, NumNode, StrNode, TextTest};
use super::parser::{BinOp, Expr, ExprKind, LogicOp, UnaryOp};
use super::{excerpt, suggestion, Diag};
use crate::features::{self, FeatureDef, FeatureType};

/// The functions of the language.
const FUNCTIONS: [&str; 8] = [
    "has",
    "abs",
    "min",
    "max",
    "lower",
    "contains",
    "starts_with",
    "ends_with",
];

/// A type-checked condition.
#[derive(Debug)]
pub(super) struct Checked {
    /// The typed tree, not yet folded.
    pub(super) root: BoolNode,
    /// Catalog names read, each once, in order of first use.
    pub(super) features: Vec<&'static str>,
}

/// Checks that a condition is a well-typed bool over known features.
pub(super) fn check(expr: &Expr) -> Result<Checked, Vec<Diag>> {
    let mut checker = Checker {
        diags: Vec::new(),
        features: Vec::new(),
    };
    let root = checker.expr(expr);
    let root = match root {
        Some(Typed::Bool(root)) => Some(root),
        Some(other) => {
            checker.error(
                expr.start,
                format!("condition must be a bool, found {}", other.ty()),
            );
            None
        }
        None => None,
    };
    match root {
        Some(root) if checker.diags.is_empty() => Ok(Checked {
            root,
            features: checker.features,
        }),
        _ => {
            let mut diags = checker.diags;
            if diags.is_empty() {
                diags.push(Diag::new(expr.start, "invalid condition"));
            }
            diags.sort_by_key(|d| d.offset);
            Err(diags)
        }
    }
}

/// A checked sub-expression, by type.
#[derive(Debug)]
enum Typed {
    Num(NumNode),
    Bool(BoolNode),
    Str(StrNode),
    NumList(Vec<f64>),
    StrList(Vec<Box<str>>),
}

impl Typed {
    fn ty(&self) -> &'static str {
        match self {
            Typed::Num(_) => "number",
            Typed::Bool(_) => "bool",
            Typed::Str(_) => "string",
            Typed::NumList(_) => "list<number>",
            Typed::StrList(_) => "list<string>",
        }
    }
}

struct Checker {
    diags: Vec<Diag>,
    features: Vec<&'static str>,
}

impl Checker {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.diags.push(Diag::new(offset, message));
    }

    /// `None` when the expression has an error (already reported).
    fn expr(&mut self, e: &Expr) -> Option<Typed> {
        match &e.kind {
            ExprKind::Number(v) => Some(Typed::Num(NumNode::Const(*v))),
            ExprKind::Str(s) => Some(Typed::Str(StrNode::Const(s.as_str().into()))),
            ExprKind::Bool(b) => Some(Typed::Bool(BoolNode::Const(Some(*b)))),
            ExprKind::List(_) => {
                self.error(
                    e.start,
                    "a list can only appear on the right of `in`, as in `tx.hour in [1, 2]`",
                );
                None
            }
            ExprKind::Name(name) => {
                let def = self.feature(name, e.start)?;
                Some(match def.ty {
                    FeatureType::Number => Typed::Num(NumNode::Feature(def.index)),
                    FeatureType::Bool => Typed::Bool(BoolNode::Feature(def.index)),
                    FeatureType::Text => Typed::Str(StrNode::Feature(def.index)),
                })
            }
            ExprKind::Unary { op, operand } => {
                let inner = self.expr(operand);
                match op {
                    UnaryOp::Not => {
                        let x = self.want_bool(inner, operand, "`!` needs a bool")?;
                        Some(Typed::Bool(BoolNode::Not(Box::new(x))))
                    }
                    UnaryOp::Neg => {
                        let x = self.want_num(inner, operand, "unary `-` needs a number")?;
                        Some(Typed::Num(NumNode::Neg(Box::new(x))))
                    }
                }
            }
            ExprKind::Logical { op, operands } => {
                let what = format!("`{}` needs bool operands", op.symbol());
                let mut nodes = Vec::with_capacity(operands.len());
                let mut ok = true;
                for operand in operands {
                    let typed = self.expr(operand);
                    match self.want_bool(typed, operand, &what) {
                        Some(node) => nodes.push(node),
                        None => ok = false,
                    }
                }
                ok.then(|| {
                    Typed::Bool(match op {
                        LogicOp::And => BoolNode::And(nodes.into()),
                        LogicOp::Or => BoolNode::Or(nodes.into()),
                    })
                })
            }
            ExprKind::Binary {
                op,
                op_at,
                lhs,
                rhs,
            } => self.binary(*op, *op_at, lhs, rhs),
            ExprKind::Call { name, args } => self.call(e.start, name, args),
        }
    }

    /// Resolves a feature name, recording it; reports an unknown one with a suggestion.
    fn feature(&mut self, name: &str, at: usize) -> Option<&'static FeatureDef> {
        match features::lookup(name) {
            Some(def) => {
                if !self.features.contains(&def.name) {
                    self.features.push(def.name);
                }
                Some(def)
            }
            None => {
                let hint = suggestion(name, features::all().map(|d| d.name));
                self.error(at, format!("unknown feature `{}`{hint}", excerpt(name)));
                None
            }
        }
    }

    fn want_num(&mut self, typed: Option<Typed>, e: &Expr, what: &str) -> Option<NumNode> {
        match typed? {
            Typed::Num(n) => Some(n),
            other => {
                self.error(e.start, format!("{what}, found {}", other.ty()));
                None
            }
        }
    }

    fn want_bool(&mut self, typed: Option<Typed>, e: &Expr, what: &str) -> Option<BoolNode> {
        match typed? {
            Typed::Bool(b) => Some(b),
            other => {
                self.error(e.start, format!("{what}, found {}", other.ty()));
                None
            }
        }
    }

    fn want_str(&mut self, typed: Option<Typed>, e: &Expr, what: &str) -> Option<StrNode> {
        match typed? {
            Typed::Str(s) => Some(s),
            other => {
                self.error(e.start, format!("{what}, found {}", other.ty()));
                None
            }
        }
    }

    fn binary(&mut self, op: BinOp, op_at: usize, lhs: &Expr, rhs: &Expr) -> Option<Typed> {
        let arith = match op {
            BinOp::Add => Some(ArithOp::Add),
            BinOp::Sub => Some(ArithOp::Sub),
            BinOp::Mul => Some(ArithOp::Mul),
            BinOp::Div => Some(ArithOp::Div),
            BinOp::Rem => Some(ArithOp::Rem),
            _ => None,
        };
        let cmp = match op {
            BinOp::Eq => CmpOp::Eq,
            BinOp::Ne => CmpOp::Ne,
            BinOp::Lt => CmpOp::Lt,
            BinOp::Le => CmpOp::Le,
            BinOp::Gt => CmpOp::Gt,
            BinOp::Ge => CmpOp::Ge,
            BinOp::In => return self.membership(op_at, lhs, rhs),
            _ => CmpOp::Eq,
        };
        let (a, b) = (self.expr(lhs), self.expr(rhs));
        if let Some(arith) = arith {
            let what = format!("`{}` needs numbers", op.symbol());
            let a = self.want_num(a, lhs, &what);
            let b = self.want_num(b, rhs, &what);
            return Some(Typed::Num(NumNode::Arith(
                arith,
                Box::new(a?),
                Box::new(b?),
            )));
        }
        if matches!(op, BinOp::Eq | BinOp::Ne) {
            let negated = op == BinOp::Ne;
            return match (a?, b?) {
                (Typed::Num(a), Typed::Num(b)) => {
                    Some(Typed::Bool(BoolNode::CmpNum(cmp, Box::new(a), Box::new(b))))
                }
                (Typed::Bool(a), Typed::Bool(b)) => Some(Typed::Bool(BoolNode::EqBool(
                    negated,
                    Box::new(a),
                    Box::new(b),
                ))),
                (Typed::Str(a), Typed::Str(b)) => Some(Typed::Bool(BoolNode::EqStr(
                    negated,
                    Box::new(a),
                    Box::new(b),
                ))),
                (a, b) => {
                    self.error(
                        op_at,
                        format!(
                            "cannot compare {} with {} using `{}`",
                            a.ty(),
                            b.ty(),
                            op.symbol()
                        ),
                    );
                    None
                }
            };
        }
        let what = format!("`{}` needs numbers", op.symbol());
        let a = self.want_num(a, lhs, &what);
        let b = self.want_num(b, rhs, &what);
        Some(Typed::Bool(BoolNode::CmpNum(
            cmp,
            Box::new(a?),
            Box::new(b?),
        )))
    }

    /// `x in [...]`: a number in a number list or a string in a string list.
    fn membership(&mut self, op_at: usize, lhs: &Expr, rhs: &Expr) -> Option<Typed> {
        let needle = self.expr(lhs);
        let list = match &rhs.kind {
            ExprKind::List(items) => self.list(rhs.start, items),
            _ => {
                let typed = self.expr(rhs);
                if let Some(typed) = typed {
                    self.error(
                        rhs.start,
                        format!(
                            "`in` needs a list on its right, as in `tx.hour in [1, 2]`, found {}",
                            typed.ty()
                        ),
                    );
                }
                None
            }
        };
        match (needle?, list?) {
            (Typed::Num(x), Typed::NumList(list)) => {
                Some(Typed::Bool(BoolNode::InNum(Box::new(x), list.into())))
            }
            (Typed::Str(x), Typed::StrList(list)) => {
                Some(Typed::Bool(BoolNode::InStr(Box::new(x), list.into())))
            }
            (x, list) => {
                self.error(
                    op_at,
                    format!("cannot look for a {} in a {}", x.ty(), list.ty()),
                );
                None
            }
        }
    }

    /// A literal list: numbers or strings, all of one type, at least one.
    fn list(&mut self, at: usize, items: &[Expr]) -> Option<Typed> {
        let Some(first) = items.first() else {
            self.error(at, "empty list: `in []` can never be true");
            return None;
        };
        let mut numbers = Vec::new();
        let mut strings = Vec::new();
        let mut want_numbers = None;
        let mut ok = true;
        for item in items {
            let literal = match &item.kind {
                ExprKind::Number(v) => Some(Ok(*v)),
                ExprKind::Unary {
                    op: UnaryOp::Neg,
                    operand,
                } => match operand.kind {
                    ExprKind::Number(v) => Some(Ok(-v)),
                    _ => None,
                },
                ExprKind::Str(s) => Some(Err(s.as_str())),
                _ => None,
            };
            let Some(literal) = literal else {
                self.error(
                    item.start,
                    "list elements must be number or string literals",
                );
                ok = false;
                continue;
            };
            let is_number = literal.is_ok();
            let want = *want_numbers.get_or_insert(is_number);
            if want != is_number {
                let (found, first_ty) = if is_number {
                    ("number", "string")
                } else {
                    ("string", "number")
                };
                self.error(
                    item.start,
                    format!(
                        "list elements must all have the same type: found a {found} in a list \
                         of {first_ty}s"
                    ),
                );
                ok = false;
                continue;
            }
            match literal {
                Ok(v) => numbers.push(v),
                Err(s) => strings.push(s.into()),
            }
        }
        if !ok {
            return None;
        }
        match want_numbers {
            Some(true) => Some(Typed::NumList(numbers)),
            Some(false) => Some(Typed::StrList(strings)),
            None => {
                self.error(
                    first.start,
                    "list elements must be number or string literals",
                );
                None
            }
        }
    }

    fn call(&mut self, at: usize, name: &str, args: &[Expr]) -> Option<Typed> {
        if name == "has" {
            return self.has(at, args);
        }
        // Check the arguments even when the call is wrong, to report their own errors too.
        let typed: Vec<Option<Typed>> = args.iter().map(|a| self.expr(a)).collect();
        let arity = |min: usize, max: usize| (min..=max).contains(&args.len());
        let (ok, expected) = match name {
            "abs" | "lower" => (arity(1, 1), "1 argument"),
            "min" | "max" => (arity(2, usize::MAX), "at least 2 arguments"),
            "contains" | "starts_with" | "ends_with" => (arity(2, 2), "2 arguments"),
            _ => {
                let hint = suggestion(name, FUNCTIONS);
                let hint = if hint.is_empty() {
                    format!(" (functions: {})", FUNCTIONS.join(", "))
                } else {
                    hint
                };
                self.error(at, format!("unknown function `{}`{hint}", excerpt(name)));
                return None;
            }
        };
        if !ok {
            self.error(
                at,
                format!("`{name}` takes {expected}, found {}", args.len()),
            );
            return None;
        }
        let mut nums = Vec::new();
        let mut strs = Vec::new();
        let mut all_ok = true;
        for (i, (arg, typed)) in args.iter().zip(typed).enumerate() {
            let position = i + 1;
            match name {
                "abs" | "min" | "max" => {
                    let what = format!("argument {position} of `{name}` must be a number");
                    match self.want_num(typed, arg, &what) {
                        Some(n) => nums.push(n),
                        None => all_ok = false,
                    }
                }
                _ => {
                    let what = format!("argument {position} of `{name}` must be a string");
                    match self.want_str(typed, arg, &what) {
                        Some(s) => strs.push(s),
                        None => all_ok = false,
                    }
                }
            }
        }
        if !all_ok {
            return None;
        }
        let mut nums = nums.into_iter();
        let mut strs = strs.into_iter();
        Some(match name {
            "abs" => Typed::Num(NumNode::Abs(Box::new(nums.next()?))),
            "min" => Typed::Num(NumNode::Min(nums.collect())),
            "max" => Typed::Num(NumNode::Max(nums.collect())),
            "lower" => Typed::Str(StrNode::Lower(Box::new(strs.next()?))),
            _ => {
                let test = match name {
                    "contains" => TextTest::Contains,
                    "starts_with" => TextTest::StartsWith,
                    _ => TextTest::EndsWith,
                };
                let (hay, needle) = (strs.next()?, strs.next()?);
                Typed::Bool(BoolNode::Text(test, Box::new(hay), Box::new(needle)))
            }
        })
    }

    /// `has(feature)`: takes a bare feature name, never an expression.
    fn has(&mut self, at: usize, args: &[Expr]) -> Option<Typed> {
        let [arg] = args else {
            self.error(at, format!("`has` takes 1 argument, found {}", args.len()));
            return None;
        };
        let ExprKind::Name(name) = &arg.kind else {
            self.error(
                arg.start,
                "`has` takes a feature name, as in `has(card.amount_mean)`",
            );
            return None;
        };
        let def = self.feature(name, arg.start)?;
        Some(Typed::Bool(match def.ty {
            FeatureType::Text => BoolNode::HasText(def.index),
            FeatureType::Number | FeatureType::Bool => BoolNode::HasNum(def.index),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    fn checked(source: &str) -> Checked {
        check(&parse(source).unwrap()).unwrap_or_else(|e| panic!("{source}: {e:?}"))
    }

    fn errors(source: &str) -> Vec<Diag> {
        check(&parse(source).unwrap()).unwrap_err()
    }

    fn error(source: &str) -> Diag {
        let mut all = errors(source);
        assert_eq!(all.len(), 1, "{source}: {all:?}");
        all.remove(0)
    }

    #[test]
    fn accepts_well_typed_conditions() {
        for source in [
            "card.count_1m >= 3",
            "tx.kind == 'refund' && tx.amount > 100",
            "ring.has_fraud || !user.new_device",
            "ring.has_fraud == user.new_device",
            "tx.country in ['US', 'GB'] && tx.hour in [0, 1, -2]",
            "has(tx.ip) && contains(lower(tx.merchant), 'casino')",
            "starts_with(tx.ip, '10.') || ends_with(tx.merchant, 'Ltd')",
            "abs(card.amount_zscore) > 3 && min(1, 2, tx.amount) < max(tx.hour, 4)",
            "-tx.amount % 7 != 0",
        ] {
            checked(source);
        }
    }

    #[test]
    fn lists_features_read_once_in_order() {
        let c = checked("tx.amount > 1 && has(tx.kind) && tx.amount < card.sum_1m + tx.amount");
        assert_eq!(c.features, vec!["tx.amount", "tx.kind", "card.sum_1m"]);
        assert!(checked("1 < 2").features.is_empty());
    }

    #[test]
    fn rejects_an_unknown_feature_with_a_suggestion() {
        assert_eq!(
            error("card.cnt_1m >= 3"),
            Diag::new(
                0,
                "unknown feature `card.cnt_1m` (did you mean `card.count_1m`?)"
            )
        );
        assert_eq!(
            error("tx.amount > 1 && tx.amout > 2").message,
            "unknown feature `tx.amout` (did you mean `tx.amount`?)"
        );
        assert_eq!(
            error("zebra.stripes > 1"),
            Diag::new(0, "unknown feature `zebra.stripes`")
        );
    }

    #[test]
    fn reports_every_error_in_order() {
        let all = errors("card.cnt_1m > 1 || tx.knd == 'x' || 1 + 'a' > 2");
        let offsets: Vec<usize> = all.iter().map(|d| d.offset).collect();
        assert_eq!(offsets, vec![0, 19, 40]);
        assert_eq!(all[2].message, "`+` needs numbers, found string");
    }

    #[test]
    fn rejects_logic_on_numbers() {
        assert_eq!(
            error("card.count_1m && true"),
            Diag::new(0, "`&&` needs bool operands, found number")
        );
        assert_eq!(
            error("true || tx.kind").message,
            "`||` needs bool operands, found string"
        );
        assert_eq!(
            error("!tx.amount"),
            Diag::new(1, "`!` needs a bool, found number")
        );
        assert_eq!(
            error("-tx.kind == 1").message,
            "unary `-` needs a number, found string"
        );
    }

    #[test]
    fn rejects_comparing_different_types() {
        assert_eq!(
            error("tx.kind == 3"),
            Diag::new(8, "cannot compare string with number using `==`")
        );
        assert_eq!(
            error("ring.has_fraud != 1").message,
            "cannot compare bool with number using `!=`"
        );
        assert_eq!(
            error("tx.kind < 1"),
            Diag::new(0, "`<` needs numbers, found string")
        );
        assert_eq!(
            errors("tx.kind < 'z'"),
            vec![
                Diag::new(0, "`<` needs numbers, found string"),
                Diag::new(10, "`<` needs numbers, found string")
            ]
        );
        assert_eq!(
            error("1 >= true"),
            Diag::new(5, "`>=` needs numbers, found bool")
        );
        assert_eq!(error("tx.amount * tx.kind > 1").offset, 12);
    }

    #[test]
    fn rejects_a_condition_that_is_not_a_bool() {
        assert_eq!(
            error("card.count_1m + 1"),
            Diag::new(0, "condition must be a bool, found number")
        );
        assert_eq!(
            error("lower(tx.kind)").message,
            "condition must be a bool, found string"
        );
    }

    #[test]
    fn rejects_wrong_function_arity() {
        assert_eq!(
            error("abs(1, 2) > 0"),
            Diag::new(0, "`abs` takes 1 argument, found 2")
        );
        assert_eq!(
            error("min(1) > 0").message,
            "`min` takes at least 2 arguments, found 1"
        );
        assert_eq!(
            error("max() > 0").message,
            "`max` takes at least 2 arguments, found 0"
        );
        assert_eq!(
            error("contains(tx.kind)").message,
            "`contains` takes 2 arguments, found 1"
        );
        let both: Vec<String> = errors("x || starts_with('a', 'b', 'c')")
            .into_iter()
            .map(|d| d.message)
            .collect();
        assert_eq!(
            both,
            vec![
                "unknown feature `x`",
                "`starts_with` takes 2 arguments, found 3"
            ]
        );
        assert_eq!(
            error("has() || true").message,
            "`has` takes 1 argument, found 0"
        );
        assert_eq!(
            error("lower() == 'a'").message,
            "`lower` takes 1 argument, found 0"
        );
    }

    #[test]
    fn rejects_wrong_function_argument_types() {
        assert_eq!(
            error("lower(3) == 'a'"),
            Diag::new(6, "argument 1 of `lower` must be a string, found number")
        );
        assert_eq!(
            error("abs(tx.kind) > 1").message,
            "argument 1 of `abs` must be a number, found string"
        );
        assert_eq!(
            error("max(1, 'a') > 1").message,
            "argument 2 of `max` must be a number, found string"
        );
        assert_eq!(
            error("ends_with(tx.kind, 1)").message,
            "argument 2 of `ends_with` must be a string, found number"
        );
        assert_eq!(
            error("has(tx.amount + 1)"),
            Diag::new(
                4,
                "`has` takes a feature name, as in `has(card.amount_mean)`"
            )
        );
        assert_eq!(
            error("has(tx.amout)").message,
            "unknown feature `tx.amout` (did you mean `tx.amount`?)"
        );
    }

    #[test]
    fn rejects_an_unknown_function() {
        assert_eq!(
            error("lowr(tx.kind) == 'a'"),
            Diag::new(0, "unknown function `lowr` (did you mean `lower`?)")
        );
        assert!(error("sqrt(2) > 1")
            .message
            .starts_with("unknown function `sqrt` (functions: has, abs"));
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(
            error("tx.hour in [1, 'a', 3]"),
            Diag::new(
                15,
                "list elements must all have the same type: found a string in a list of numbers"
            )
        );
        assert_eq!(
            error("tx.kind in ['a', 2]").message,
            "list elements must all have the same type: found a number in a list of strings"
        );
        assert_eq!(
            error("tx.hour in [1, tx.amount]"),
            Diag::new(15, "list elements must be number or string literals")
        );
        assert_eq!(
            error("tx.hour in [true]").message,
            "list elements must be number or string literals"
        );
        assert_eq!(
            error("tx.hour in []"),
            Diag::new(11, "empty list: `in []` can never be true")
        );
        assert_eq!(
            error("tx.hour == [1]").message,
            "a list can only appear on the right of `in`, as in `tx.hour in [1, 2]`"
        );
    }

    #[test]
    fn rejects_bad_membership() {
        assert_eq!(
            error("tx.kind in [1, 2]"),
            Diag::new(8, "cannot look for a string in a list<number>")
        );
        assert_eq!(
            error("ring.has_fraud in ['a']").message,
            "cannot look for a bool in a list<string>"
        );
        assert_eq!(
            error("tx.hour in 3"),
            Diag::new(
                11,
                "`in` needs a list on its right, as in `tx.hour in [1, 2]`, found number"
            )
        );
    }
}
