//! The compiled form of a condition: typed evaluation trees that index straight into
//! [`FeatureValues`], constant folding, and the evaluator behind [`super::Rule::matches`].
//!
//! There is one tree type per value type, so evaluation never checks a type at run time and
//! never allocates: numbers are `f64` (`NaN` is missing), strings are borrowed (`lower` is a
//! flag applied while comparing, not a new string), and truth is `Option<bool>` (`None` is
//! UNKNOWN).

use std::char::ToLowercase;
use std::str::Chars;

use crate::features::FeatureValues;

/// A number-valued tree.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum NumNode {
    Const(f64),
    /// Index into [`FeatureValues::num`].
    Feature(usize),
    Neg(Box<NumNode>),
    Arith(ArithOp, Box<NumNode>, Box<NumNode>),
    Abs(Box<NumNode>),
    Min(Box<[NumNode]>),
    Max(Box<[NumNode]>),
}

/// A string-valued tree.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum StrNode {
    Const(Box<str>),
    /// Index into [`FeatureValues::text`].
    Feature(usize),
    Lower(Box<StrNode>),
}

/// A truth-valued tree (three-valued: `None` is UNKNOWN).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum BoolNode {
    Const(Option<bool>),
    /// A bool feature: index into [`FeatureValues::num`].
    Feature(usize),
    /// `has()` of a number or bool feature.
    HasNum(usize),
    /// `has()` of a text feature.
    HasText(usize),
    Not(Box<BoolNode>),
    And(Box<[BoolNode]>),
    Or(Box<[BoolNode]>),
    CmpNum(CmpOp, Box<NumNode>, Box<NumNode>),
    /// The common `feature op constant`, without the two indirections of `CmpNum`.
    CmpFeature(CmpOp, usize, f64),
    /// `==` (false) or `!=` (true) between bools.
    EqBool(bool, Box<BoolNode>, Box<BoolNode>),
    /// `==` (false) or `!=` (true) between strings.
    EqStr(bool, Box<StrNode>, Box<StrNode>),
    InNum(Box<NumNode>, Box<[f64]>),
    InStr(Box<StrNode>, Box<[Box<str>]>),
    Text(TextTest, Box<StrNode>, Box<StrNode>),
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Number comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The comparison with its operands swapped: `a < b` is `b > a`.
    fn swapped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Eq | CmpOp::Ne => self,
        }
    }
}

/// String tests: `contains`, `starts_with`, `ends_with`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TextTest {
    Contains,
    StartsWith,
    EndsWith,
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub(super) struct Condition {
    root: BoolNode,
}

impl Condition {
    /// Compiles a type-checked tree, folding constants.
    pub(super) fn new(root: BoolNode) -> Condition {
        Condition {
            root: fold_bool(root),
        }
    }

    /// Whether the condition is TRUE (not false, not UNKNOWN).
    #[inline]
    pub(super) fn matches(&self, f: &FeatureValues<'_>) -> bool {
        truth(&self.root, f) == Some(true)
    }

    #[cfg(test)]
    pub(super) fn root(&self) -> &BoolNode {
        &self.root
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation. Indices come from the catalog and are always in range; `get` keeps even a
// hypothetical bad index from panicking, at the cost of the bounds check indexing does anyway.

fn number(n: &NumNode, f: &FeatureValues<'_>) -> f64 {
    match n {
        NumNode::Const(v) => *v,
        NumNode::Feature(i) => f.num.get(*i).copied().unwrap_or(f64::NAN),
        NumNode::Neg(x) => -number(x, f),
        NumNode::Arith(op, a, b) => arith(*op, number(a, f), number(b, f)),
        NumNode::Abs(x) => number(x, f).abs(),
        NumNode::Min(xs) => extreme(xs, f, |v, best| v < best),
        NumNode::Max(xs) => extreme(xs, f, |v, best| v > best),
    }
}

fn arith(op: ArithOp, a: f64, b: f64) -> f64 {
    match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        // Division by zero is missing, not infinity: an empty history is not infinite risk.
        ArithOp::Div if b == 0.0 => f64::NAN,
        ArithOp::Div => a / b,
        ArithOp::Rem if b == 0.0 => f64::NAN,
        ArithOp::Rem => a % b,
    }
}

/// `min` / `max`, missing when any argument is (unlike `f64::min`, which skips `NaN`).
fn extreme(xs: &[NumNode], f: &FeatureValues<'_>, better: fn(f64, f64) -> bool) -> f64 {
    let mut best = f64::NAN;
    for (i, x) in xs.iter().enumerate() {
        let v = number(x, f);
        if v.is_nan() {
            return f64::NAN;
        }
        if i == 0 || better(v, best) {
            best = v;
        }
    }
    best
}

/// A string during evaluation: borrowed text, and whether `lower` applies to it.
#[derive(Clone, Copy, Debug)]
struct StrVal<'s> {
    text: &'s str,
    lower: bool,
}

impl<'s> StrVal<'s> {
    fn chars(self) -> FoldChars<'s> {
        FoldChars {
            chars: self.text.chars(),
            lower: self.lower,
            pending: None,
        }
    }
}

/// The characters of a [`StrVal`], lowercased on the fly when asked to.
#[derive(Clone, Debug)]
struct FoldChars<'s> {
    chars: Chars<'s>,
    lower: bool,
    pending: Option<ToLowercase>,
}

impl Iterator for FoldChars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        if let Some(pending) = &mut self.pending {
            if let Some(c) = pending.next() {
                return Some(c);
            }
            self.pending = None;
        }
        let c = self.chars.next()?;
        if !self.lower {
            return Some(c);
        }
        let mut lowered = c.to_lowercase();
        let first = lowered.next();
        self.pending = Some(lowered);
        first
    }
}

/// Lowercases the way `lower()` does at run time, for constant folding.
fn lowercase(text: &str) -> String {
    StrVal { text, lower: true }.chars().collect()
}

fn string<'s>(n: &'s StrNode, f: &'s FeatureValues<'_>) -> Option<StrVal<'s>> {
    match n {
        StrNode::Const(text) => Some(StrVal { text, lower: false }),
        StrNode::Feature(i) => f
            .text
            .get(*i)
            .copied()
            .flatten()
            .map(|text| StrVal { text, lower: false }),
        StrNode::Lower(x) => string(x, f).map(|v| StrVal { lower: true, ..v }),
    }
}

fn str_eq(a: StrVal<'_>, b: StrVal<'_>) -> bool {
    if !a.lower && !b.lower {
        a.text == b.text
    } else if a.text.is_ascii() && b.text.is_ascii() {
        ascii_eq(a.text.as_bytes(), a.lower, b.text.as_bytes(), b.lower)
    } else {
        a.chars().eq(b.chars())
    }
}

/// Byte-wise equality of ASCII texts, each lowercased when asked. On ASCII, `lower` is
/// exactly `to_ascii_lowercase`, and bytes are many times faster than lowercasing chars.
fn ascii_eq(a: &[u8], a_lower: bool, b: &[u8], b_lower: bool) -> bool {
    let fold = |byte: u8, lower: bool| {
        if lower {
            byte.to_ascii_lowercase()
        } else {
            byte
        }
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| fold(x, a_lower) == fold(y, b_lower))
}

/// Whether `rest` begins with all of `prefix`.
fn begins_with(mut rest: FoldChars<'_>, mut prefix: FoldChars<'_>) -> bool {
    prefix.all(|c| rest.next() == Some(c))
}

fn text_test(test: TextTest, hay: StrVal<'_>, needle: StrVal<'_>) -> bool {
    if !hay.lower && !needle.lower {
        return match test {
            TextTest::Contains => hay.text.contains(needle.text),
            TextTest::StartsWith => hay.text.starts_with(needle.text),
            TextTest::EndsWith => hay.text.ends_with(needle.text),
        };
    }
    if hay.text.is_ascii() && needle.text.is_ascii() {
        let (h, n) = (hay.text.as_bytes(), needle.text.as_bytes());
        let matches = |window: &[u8]| ascii_eq(window, hay.lower, n, needle.lower);
        return match test {
            TextTest::StartsWith => h.get(..n.len()).is_some_and(matches),
            TextTest::EndsWith => h
                .len()
                .checked_sub(n.len())
                .and_then(|start| h.get(start..))
                .is_some_and(matches),
            TextTest::Contains => n.is_empty() || h.windows(n.len()).any(matches),
        };
    }
    match test {
        TextTest::StartsWith => begins_with(hay.chars(), needle.chars()),
        TextTest::EndsWith => {
            let (h, n) = (hay.chars().count(), needle.chars().count());
            n <= h && hay.chars().skip(h - n).eq(needle.chars())
        }
        TextTest::Contains => {
            let mut rest = hay.chars();
            loop {
                if begins_with(rest.clone(), needle.chars()) {
                    return true;
                }
                if rest.next().is_none() {
                    return false;
                }
            }
        }
    }
}

/// A comparison of numbers; UNKNOWN when either is missing.
#[inline]
fn compare(op: CmpOp, a: f64, b: f64) -> Option<bool> {
    if a.is_nan() || b.is_nan() {
        return None;
    }
    Some(match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    })
}

fn truth(n: &BoolNode, f: &FeatureValues<'_>) -> Option<bool> {
    match n {
        BoolNode::Const(v) => *v,
        BoolNode::Feature(i) => {
            let v = f.num.get(*i).copied().unwrap_or(f64::NAN);
            (!v.is_nan()).then_some(v != 0.0)
        }
        BoolNode::HasNum(i) => Some(f.num.get(*i).is_some_and(|v| !v.is_nan())),
        BoolNode::HasText(i) => Some(f.text.get(*i).is_some_and(Option::is_some)),
        BoolNode::Not(x) => truth(x, f).map(|b| !b),
        BoolNode::And(xs) => {
            // Kleene: any false operand makes it false, even after an UNKNOWN one.
            let mut unknown = false;
            for x in xs.iter() {
                match truth(x, f) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            (!unknown).then_some(true)
        }
        BoolNode::Or(xs) => {
            let mut unknown = false;
            for x in xs.iter() {
                match truth(x, f) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(false)
        }
        BoolNode::CmpNum(op, a, b) => compare(*op, number(a, f), number(b, f)),
        BoolNode::CmpFeature(op, i, c) => {
            compare(*op, f.num.get(*i).copied().unwrap_or(f64::NAN), *c)
        }
        BoolNode::EqBool(negated, a, b) => {
            let (a, b) = (truth(a, f), truth(b, f));
            Some((a? == b?) != *negated)
        }
        BoolNode::EqStr(negated, a, b) => {
            let (a, b) = (string(a, f), string(b, f));
            Some(str_eq(a?, b?) != *negated)
        }
        BoolNode::InNum(x, list) => {
            let v = number(x, f);
            (!v.is_nan()).then(|| list.contains(&v))
        }
        BoolNode::InStr(x, list) => {
            let v = string(x, f)?;
            Some(
                list.iter()
                    .any(|text| str_eq(v, StrVal { text, lower: false })),
            )
        }
        BoolNode::Text(test, hay, needle) => {
            let (hay, needle) = (string(hay, f), string(needle, f));
            Some(text_test(*test, hay?, needle?))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Constant folding: a node whose operands are all constants is evaluated once, at load time,
// with no features set (it reads none).

fn fold_num(n: NumNode) -> NumNode {
    let folded = match n {
        NumNode::Neg(x) => NumNode::Neg(Box::new(fold_num(*x))),
        NumNode::Arith(op, a, b) => {
            NumNode::Arith(op, Box::new(fold_num(*a)), Box::new(fold_num(*b)))
        }
        NumNode::Abs(x) => NumNode::Abs(Box::new(fold_num(*x))),
        NumNode::Min(xs) => NumNode::Min(xs.into_vec().into_iter().map(fold_num).collect()),
        NumNode::Max(xs) => NumNode::Max(xs.into_vec().into_iter().map(fold_num).collect()),
        leaf @ (NumNode::Const(_) | NumNode::Feature(_)) => return leaf,
    };
    let constant = |n: &NumNode| matches!(n, NumNode::Const(_));
    let all_constant = match &folded {
        NumNode::Neg(x) | NumNode::Abs(x) => constant(x),
        NumNode::Arith(_, a, b) => constant(a) && constant(b),
        NumNode::Min(xs) | NumNode::Max(xs) => xs.iter().all(constant),
        NumNode::Const(_) | NumNode::Feature(_) => false,
    };
    if all_constant {
        NumNode::Const(number(&folded, &FeatureValues::default()))
    } else {
        folded
    }
}

fn fold_str(n: StrNode) -> StrNode {
    match n {
        StrNode::Lower(x) => match fold_str(*x) {
            StrNode::Const(text) => StrNode::Const(lowercase(&text).into()),
            lowered @ StrNode::Lower(_) => lowered,
            other => StrNode::Lower(Box::new(other)),
        },
        leaf => leaf,
    }
}

/// `&&` (`is_and`) or `||`: drops neutral constants, collapses on an absorbing one.
fn fold_logical(xs: Box<[BoolNode]>, is_and: bool) -> BoolNode {
    let mut kept = Vec::with_capacity(xs.len());
    for x in xs.into_vec() {
        match fold_bool(x) {
            BoolNode::Const(Some(b)) if b == is_and => {}
            absorbing @ BoolNode::Const(Some(_)) => return absorbing,
            other => kept.push(other),
        }
    }
    if kept.len() <= 1 {
        return kept.pop().unwrap_or(BoolNode::Const(Some(is_and)));
    }
    if is_and {
        BoolNode::And(kept.into())
    } else {
        BoolNode::Or(kept.into())
    }
}

fn fold_bool(n: BoolNode) -> BoolNode {
    let folded = match n {
        BoolNode::And(xs) => return fold_logical(xs, true),
        BoolNode::Or(xs) => return fold_logical(xs, false),
        BoolNode::Not(x) => BoolNode::Not(Box::new(fold_bool(*x))),
        BoolNode::CmpNum(op, a, b) => match (fold_num(*a), fold_num(*b)) {
            (NumNode::Feature(i), NumNode::Const(c)) => BoolNode::CmpFeature(op, i, c),
            (NumNode::Const(c), NumNode::Feature(i)) => BoolNode::CmpFeature(op.swapped(), i, c),
            (a, b) => BoolNode::CmpNum(op, Box::new(a), Box::new(b)),
        },
        BoolNode::EqBool(negated, a, b) => {
            BoolNode::EqBool(negated, Box::new(fold_bool(*a)), Box::new(fold_bool(*b)))
        }
        BoolNode::EqStr(negated, a, b) => {
            BoolNode::EqStr(negated, Box::new(fold_str(*a)), Box::new(fold_str(*b)))
        }
        BoolNode::InNum(x, list) => BoolNode::InNum(Box::new(fold_num(*x)), list),
        BoolNode::InStr(x, list) => BoolNode::InStr(Box::new(fold_str(*x)), list),
        BoolNode::Text(test, a, b) => {
            BoolNode::Text(test, Box::new(fold_str(*a)), Box::new(fold_str(*b)))
        }
        leaf @ (BoolNode::Const(_)
        | BoolNode::Feature(_)
        | BoolNode::HasNum(_)
        | BoolNode::HasText(_)
        | BoolNode::CmpFeature(..)) => return leaf,
    };
    let num = |n: &NumNode| matches!(n, NumNode::Const(_));
    let text = |n: &StrNode| matches!(n, StrNode::Const(_));
    let truth_const = |n: &BoolNode| matches!(n, BoolNode::Const(_));
    let all_constant = match &folded {
        BoolNode::Not(x) => truth_const(x),
        BoolNode::CmpNum(_, a, b) => num(a) && num(b),
        BoolNode::EqBool(_, a, b) => truth_const(a) && truth_const(b),
        BoolNode::EqStr(_, a, b) | BoolNode::Text(_, a, b) => text(a) && text(b),
        BoolNode::InNum(x, _) => num(x),
        BoolNode::InStr(x, _) => text(x),
        _ => false,
    };
    if all_constant {
        BoolNode::Const(truth(&folded, &FeatureValues::default()))
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile_condition;
    use super::*;
    use crate::features;

    /// Feature values built by name, so tests read like rules.
    struct Values(FeatureValues<'static>);

    impl Values {
        fn new() -> Values {
            Values(FeatureValues::default())
        }

        fn num(mut self, name: &str, v: f64) -> Values {
            let def = features::lookup(name).unwrap();
            assert_ne!(def.ty, features::FeatureType::Text, "{name}");
            self.0.num[def.index] = v;
            self
        }

        fn flag(self, name: &str, v: bool) -> Values {
            self.num(name, if v { 1.0 } else { 0.0 })
        }

        fn text(mut self, name: &str, v: &'static str) -> Values {
            let def = features::lookup(name).unwrap();
            assert_eq!(def.ty, features::FeatureType::Text, "{name}");
            self.0.text[def.index] = Some(v);
            self
        }
    }

    fn compiled(source: &str) -> Condition {
        compile_condition(source)
            .unwrap_or_else(|e| panic!("{source}: {e:?}"))
            .condition
    }

    fn matches(source: &str, values: &Values) -> bool {
        compiled(source).matches(&values.0)
    }

    /// The three-valued result: `Some(b)` when the condition or its negation matches.
    fn truth_of(source: &str, values: &Values) -> Option<bool> {
        let yes = matches(source, values);
        let no = matches(&format!("!({source})"), values);
        assert!(!(yes && no), "{source} both true and false");
        if yes {
            Some(true)
        } else if no {
            Some(false)
        } else {
            None
        }
    }

    #[test]
    fn evaluates_by_precedence() {
        let none = Values::new();
        for source in [
            "1 + 2 * 3 == 7",
            "(1 + 2) * 3 == 9",
            "10 - 4 - 3 == 3",
            "2 * 3 % 4 == 2",
            "-2 * 3 == -6",
            "!false && true",
            "true || false && false",
            "!(true && false)",
            "1 < 2 == true",
            "7 % 4 == 3",
            "-7 % 4 == -3",
            "9 / 4 == 2.25",
        ] {
            assert!(matches(source, &none), "{source}");
        }
        for source in ["(true || false) && false", "!true || false", "2 + 2 != 4"] {
            assert!(!matches(source, &none), "{source}");
        }
    }

    #[test]
    fn compares_feature_values() {
        let v = Values::new()
            .num("card.count_1m", 3.0)
            .num("tx.amount", 152.5)
            .text("tx.kind", "refund")
            .flag("ring.has_fraud", true);
        assert!(matches("card.count_1m >= 3", &v));
        assert!(!matches("card.count_1m > 3", &v));
        assert!(matches("3 <= card.count_1m && 4 > card.count_1m", &v));
        assert!(matches("tx.amount / card.count_1m > 50", &v));
        assert!(matches("tx.kind == 'refund' && tx.kind != \"return\"", &v));
        assert!(matches("ring.has_fraud", &v));
        assert!(matches("ring.has_fraud == true", &v));
        assert!(matches("ring.has_fraud != false", &v));
    }

    #[test]
    fn missing_numbers_make_comparisons_unknown() {
        let none = Values::new();
        assert_eq!(truth_of("tx.amount > 10", &none), None);
        assert_eq!(truth_of("tx.amount == tx.amount", &none), None);
        assert_eq!(truth_of("tx.amount + 1 > 0", &none), None);
        assert_eq!(truth_of("0 * tx.amount == 0", &none), None);
        assert_eq!(truth_of("tx.amount in [1, 2]", &none), None);
        assert_eq!(truth_of("-tx.amount < 0", &none), None);
    }

    #[test]
    fn missing_text_and_bools_are_unknown() {
        let none = Values::new();
        assert_eq!(truth_of("tx.kind == 'refund'", &none), None);
        assert_eq!(truth_of("tx.kind != 'refund'", &none), None);
        assert_eq!(truth_of("tx.kind in ['refund']", &none), None);
        assert_eq!(truth_of("contains(tx.merchant, 'x')", &none), None);
        assert_eq!(truth_of("lower(tx.kind) == 'x'", &none), None);
        assert_eq!(truth_of("ring.has_fraud", &none), None);
        assert_eq!(truth_of("ring.has_fraud == false", &none), None);
        assert!(!matches("!ring.has_fraud", &none));
    }

    #[test]
    fn logic_is_kleene() {
        let none = Values::new();
        assert_eq!(truth_of("false && tx.amount > 1", &none), Some(false));
        assert_eq!(truth_of("tx.amount > 1 && false", &none), Some(false));
        assert_eq!(truth_of("true || tx.amount > 1", &none), Some(true));
        assert_eq!(truth_of("tx.amount > 1 || true", &none), Some(true));
        assert_eq!(truth_of("true && tx.amount > 1", &none), None);
        assert_eq!(truth_of("false || tx.amount > 1", &none), None);
        assert_eq!(truth_of("!(tx.amount > 1)", &none), None);
        // A known operand decides it at run time too, not only when folded.
        let small = Values::new().num("card.count_1m", 0.0);
        assert!(!matches("tx.amount > 1 && card.count_1m > 0", &small));
        assert!(matches("!(tx.amount > 1 && card.count_1m > 0)", &small));
        assert!(matches("tx.amount > 1 || card.count_1m == 0", &small));
    }

    #[test]
    fn has_is_never_unknown() {
        let none = Values::new();
        assert_eq!(truth_of("has(tx.amount)", &none), Some(false));
        assert_eq!(truth_of("has(tx.kind)", &none), Some(false));
        assert_eq!(truth_of("has(ring.has_fraud)", &none), Some(false));
        let some = Values::new()
            .num("tx.amount", 0.0)
            .text("tx.kind", "")
            .flag("ring.has_fraud", false);
        assert_eq!(truth_of("has(tx.amount)", &some), Some(true));
        assert_eq!(truth_of("has(tx.kind)", &some), Some(true));
        assert_eq!(truth_of("has(ring.has_fraud)", &some), Some(true));
        assert!(matches(
            "!has(card.amount_mean) || card.amount_ratio > 5",
            &none
        ));
    }

    #[test]
    fn division_and_modulo_by_zero_are_missing() {
        let v = Values::new()
            .num("tx.amount", 10.0)
            .num("card.count_1m", 0.0);
        assert_eq!(truth_of("tx.amount / card.count_1m > 1", &v), None);
        assert_eq!(truth_of("tx.amount / card.count_1m < 1", &v), None);
        assert_eq!(truth_of("tx.amount % card.count_1m == 0", &v), None);
        assert_eq!(truth_of("tx.amount / 0 > 0", &v), None);
        assert_eq!(truth_of("1 / 0 == 1 / 0", &v), None);
        assert_eq!(truth_of("has(tx.amount) || 1 % 0 > 0", &v), Some(true));
        assert_eq!(truth_of("tx.amount / -0 > 0", &v), None);
        assert_eq!(truth_of("tx.amount / 4 == 2.5", &v), Some(true));
    }

    #[test]
    fn membership_in_lists() {
        let v = Values::new()
            .num("tx.hour", 3.0)
            .num("tx.amount", -5.0)
            .text("tx.country", "GB");
        assert!(matches("tx.hour in [1, 2, 3]", &v));
        assert!(!matches("tx.hour in [4, 5]", &v));
        assert!(matches("tx.amount in [-5, 5]", &v));
        assert!(matches("tx.country in ['US', 'GB']", &v));
        assert!(!matches("tx.country in ['gb']", &v));
        assert!(matches("lower(tx.country) in ['us', 'gb']", &v));
        assert!(matches("!(tx.country in ['FR'])", &v));
    }

    #[test]
    fn number_functions() {
        let v = Values::new()
            .num("tx.amount", -7.5)
            .num("card.count_1m", 2.0)
            .num("card.count_10m", 9.0);
        assert!(matches("abs(tx.amount) == 7.5", &v));
        assert!(matches("abs(card.count_1m) == 2", &v));
        assert!(matches("min(card.count_1m, card.count_10m, 4) == 2", &v));
        assert!(matches("min(card.count_10m, tx.amount) == -7.5", &v));
        assert!(matches("max(card.count_1m, card.count_10m, 4) == 9", &v));
        assert!(matches("max(tx.amount, -8) == -7.5", &v));
        // Any missing argument makes the result missing.
        assert_eq!(truth_of("min(card.count_1m, card.sum_1m) < 100", &v), None);
        assert_eq!(truth_of("max(card.sum_1m, card.count_1m) > -100", &v), None);
        assert_eq!(truth_of("abs(card.sum_1m) >= 0", &v), None);
    }

    #[test]
    fn string_functions() {
        let v = Values::new()
            .text("tx.merchant", "ACME Books Ltd")
            .text("tx.country", "ÉTÉ");
        assert!(matches("contains(tx.merchant, 'Books')", &v));
        assert!(!matches("contains(tx.merchant, 'books')", &v));
        assert!(matches("contains(lower(tx.merchant), 'books')", &v));
        assert!(matches("contains(tx.merchant, '')", &v));
        assert!(matches("starts_with(tx.merchant, 'ACME')", &v));
        assert!(!matches("starts_with(tx.merchant, 'acme')", &v));
        assert!(matches("starts_with(lower(tx.merchant), 'acme b')", &v));
        assert!(matches("ends_with(tx.merchant, 'Ltd')", &v));
        assert!(matches("ends_with(lower(tx.merchant), 'ks ltd')", &v));
        assert!(!matches(
            "ends_with(lower(tx.merchant), 'acme books ltd!')",
            &v
        ));
        assert!(matches("lower(tx.merchant) == 'acme books ltd'", &v));
        assert!(matches("lower(tx.country) == 'été'", &v));
        assert!(matches("lower(tx.country) == lower('ÉtÉ')", &v));
        assert!(matches("lower(lower(tx.merchant)) == 'acme books ltd'", &v));
        assert!(!matches("contains(lower(tx.merchant), 'zz')", &v));
        // A lowered needle against raw text compares lowered characters with raw ones.
        assert!(!matches("contains(tx.merchant, lower('ACME'))", &v));
        assert!(!matches("contains(tx.merchant, lower('Books'))", &v));
        assert!(matches(
            "contains(lower(tx.merchant), lower(tx.merchant))",
            &v
        ));
        assert!(matches("ends_with(lower(tx.merchant), '')", &v));
        assert!(matches("starts_with(lower(tx.merchant), '')", &v));
        assert!(matches("contains(lower(tx.merchant), '')", &v));
    }

    #[test]
    fn string_functions_lowercase_beyond_ascii() {
        let v = Values::new()
            .text("tx.country", "ÉTÉ")
            .text("tx.merchant", "ab");
        assert!(matches("contains(lower(tx.country), 'té')", &v));
        assert!(!matches("contains(lower(tx.country), 'tt')", &v));
        assert!(!matches("contains(lower(tx.country), 'Té')", &v));
        assert!(matches("starts_with(lower(tx.country), 'ét')", &v));
        assert!(!matches("starts_with(lower(tx.country), 'été!')", &v));
        assert!(matches("ends_with(lower(tx.country), 'té')", &v));
        assert!(!matches("ends_with(lower(tx.country), 'xété')", &v));
        // A non-ASCII needle in ASCII text, and the other way round.
        assert!(!matches("contains(lower(tx.merchant), 'é')", &v));
        assert!(!matches("lower(tx.merchant) == 'äb'", &v));
        assert!(!matches("lower(tx.country) == 'ete'", &v));
    }

    #[test]
    fn folds_constants() {
        assert_eq!(compiled("1 + 2 > 2").root(), &BoolNode::Const(Some(true)));
        assert_eq!(compiled("1 / 0 > 2").root(), &BoolNode::Const(None));
        assert_eq!(
            compiled("lower('AB') == 'ab'").root(),
            &BoolNode::Const(Some(true))
        );
        assert_eq!(
            compiled("'b' in ['a', 'b']").root(),
            &BoolNode::Const(Some(true))
        );
        assert_eq!(
            compiled("contains('abc', 'bc')").root(),
            &BoolNode::Const(Some(true))
        );
        assert_eq!(
            compiled("min(3, 1, 2) == 1").root(),
            &BoolNode::Const(Some(true))
        );
        assert_eq!(compiled("!(2 < 1)").root(), &BoolNode::Const(Some(true)));
        assert_eq!(
            compiled("true == false").root(),
            &BoolNode::Const(Some(false))
        );
        let amount = features::lookup("tx.amount").unwrap().index;
        assert_eq!(
            compiled("true && tx.amount > 2 * 5").root(),
            &BoolNode::CmpFeature(CmpOp::Gt, amount, 10.0)
        );
        assert_eq!(
            compiled("false || 10 < tx.amount").root(),
            &BoolNode::CmpFeature(CmpOp::Gt, amount, 10.0)
        );
        assert_eq!(
            compiled("false && tx.amount > 2").root(),
            &BoolNode::Const(Some(false))
        );
        assert_eq!(
            compiled("tx.amount > 2 || true").root(),
            &BoolNode::Const(Some(true))
        );
    }

    #[test]
    fn swapped_comparisons_keep_their_meaning() {
        let v = Values::new().num("tx.amount", 5.0);
        for (source, expected) in [
            ("5 == tx.amount", true),
            ("5 != tx.amount", false),
            ("4 < tx.amount", true),
            ("5 <= tx.amount", true),
            ("6 > tx.amount", true),
            ("5 >= tx.amount", true),
            ("5 < tx.amount", false),
            ("6 <= tx.amount", false),
        ] {
            assert_eq!(matches(source, &v), expected, "{source}");
        }
    }

    #[test]
    fn folding_lowercases_like_evaluation() {
        assert_eq!(lowercase("ÀB"), "àb");
        assert_eq!(lowercase("İ"), "i\u{307}");
        let v = Values::new().text("tx.merchant", "İ");
        assert!(matches("lower(tx.merchant) == lower('İ')", &v));
    }
}
